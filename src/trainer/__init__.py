"""trainer: a PyTorch training command line configured by Hydra.

From Python: `from trainer import train, evaluate, predict` (trainer.cli.python_api), with UsageError for a mistake
and Interrupted for a run stopped by a signal. They are imported when first asked for, so that `import trainer`
imports neither torch nor Hydra."""

from trainer import moved_modules

__version__ = "0.1.0"

__all__ = ["Interrupted", "UsageError", "evaluate", "predict", "train"]


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    from trainer.cli import python_api

    return getattr(python_api, name)


moved_modules.install()
