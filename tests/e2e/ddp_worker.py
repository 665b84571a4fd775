"""`python -m trainer` for torchrun that also saves the parameters each process ended with, as
parameters.rank<N>.pt in the run directory, so that a test can compare the processes' weights (only rank 0 writes
checkpoints)."""

import os

import torch

import trainer.run
from trainer.cli import train

fit_and_test = trainer.run.fit_and_test


def fit_test_and_save_parameters(run: trainer.run.Run, run_dir) -> float:
    try:
        return fit_and_test(run, run_dir)
    finally:
        torch.save(run.engine.model.state_dict(), run_dir / f"parameters.rank{os.environ['RANK']}.pt")


trainer.run.fit_and_test = fit_test_and_save_parameters  # cli imports it from trainer.run when the run starts
train()
