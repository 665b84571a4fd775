"""What the CUDA tests share: the device override, a small model, a run that overflows float16, and weights
compared bit for bit."""

from __future__ import annotations

import torch

ON_CUDA = "trainer.device=cuda"
SMALL_MLP = "model.hidden_sizes=[32]"
"""Where the model is not what a test is about, a small one keeps the test fast."""
DIVERGING = (SMALL_MLP, "trainer.precision=16", "optimizer=sgd", "optimizer.lr=1e4")
"""SGD at a learning rate of 1e4: within a few steps the weights are so large that the float16 forward overflows."""


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    """The same tensor names, and every tensor bit for bit (compared on the CPU)."""
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(tensor.cpu(), actual[name].cpu()), name
