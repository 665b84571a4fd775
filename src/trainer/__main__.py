"""`python -m trainer ...` is the same as `train ...`."""

from trainer.cli import train

if __name__ == "__main__":
    train()
