import random

import numpy as np
import torch

from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.training.seeding import rng_states, set_rng_states

CPU = torch.device("cpu")


def draws() -> tuple:
    """One draw from each generator a run uses (numpy's Gaussian twice: its cached second value is state too)."""
    return random.random(), np.random.rand(), np.random.randn(), np.random.randn(), torch.rand(3).tolist()


def test_restored_states_repeat_the_same_draws_from_every_generator():
    np.random.randn()  # leave numpy holding a cached Gaussian
    states = rng_states(CPU)
    first = draws()
    set_rng_states(states, CPU)
    assert draws() == first


def test_states_survive_a_weights_only_checkpoint(tmp_path):
    states = rng_states(CPU)
    first = draws()
    save_checkpoint({"rng": states}, tmp_path / "rng.pt")
    draws()
    set_rng_states(load_checkpoint(tmp_path / "rng.pt")["rng"], CPU)
    assert draws() == first


def test_a_run_on_the_cpu_saves_no_gpu_state_and_starts_no_cuda():
    """A CPU run on a GPU machine leaves CUDA alone (no context, no GPU memory taken), and a checkpoint saved on a
    machine with GPUs resumes on one without: its CUDA states are not the CPU run's to restore."""
    states = rng_states(CPU)
    assert states["cuda"] == [] and not torch.cuda.is_initialized()
    first = draws()
    set_rng_states({**states, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 4}, CPU)
    assert draws() == first and not torch.cuda.is_initialized()
