"""trainer: a PyTorch training command line configured by Hydra."""

from trainer import moved_modules

__version__ = "0.1.0"

moved_modules.install()
