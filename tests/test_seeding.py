import random

import numpy as np
import torch

from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.seeding import rng_states, set_rng_states


def draws() -> tuple:
    """One draw from each generator a run uses (numpy's Gaussian twice: its cached second value is state too)."""
    return random.random(), np.random.rand(), np.random.randn(), np.random.randn(), torch.rand(3).tolist()


def test_restored_states_repeat_the_same_draws_from_every_generator():
    np.random.randn()  # leave numpy holding a cached Gaussian
    states = rng_states()
    first = draws()
    set_rng_states(states)
    assert draws() == first


def test_states_survive_a_weights_only_checkpoint(tmp_path):
    states = rng_states()
    first = draws()
    save_checkpoint({"rng": states}, tmp_path / "rng.pt")
    draws()
    set_rng_states(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert draws() == first
