"""trainer: a PyTorch training command line configured by Hydra."""

__version__ = "0.1.0"
