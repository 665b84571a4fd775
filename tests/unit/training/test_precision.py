"""trainer.precision's float types: auto is bf16 on a CUDA GPU that has it and float32 elsewhere, so that a recipe
asking for bf16 runs unchanged on a CPU."""

from __future__ import annotations

import pytest
import torch

from trainer.training.precision import Precision, autocast_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision, dtype", [("32", None), ("bf16", torch.bfloat16), ("16", torch.float16),
                                              ("auto", None)])
def test_the_float_type_of_each_precision_on_a_cpu(precision, dtype):
    assert autocast_dtype(precision, CPU) is dtype
    assert Precision(precision, CPU).dtype is dtype


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_is_bf16_on_a_cuda_gpu_that_has_it():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert autocast_dtype("auto", torch.device("cuda")) is expected
