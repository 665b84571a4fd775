"""The batches a batcher serves, as the tests compare them: copies, so that a later batch cannot change them."""

from __future__ import annotations

from itertools import islice

import torch


def batches(batcher, count=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` batches of the batcher's next pass (all of them: None), each (x, y) copied."""
    return [(x.clone(), y.clone()) for x, y in islice(iter(batcher), count)]


def assert_same_batches(one, other) -> None:
    assert len(one) == len(other)
    for (x1, y1), (x2, y2) in zip(one, other):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)
