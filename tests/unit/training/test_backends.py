"""trainer.backends: matmul precision, cuDNN autotuning and channels-last memory, as a run sets them.
(tests/unit/inference/test_trained_model.py: as `evaluate` takes them from a checkpoint.)"""

import pytest
import torch

from conftest import compose_config
from trainer.training.backends import memory_format_for, use_backend_settings
from trainer.config import MATMUL_PRECISIONS, ConfigError, TrainerConfig
from trainer.models import MLP, ResNet
from trainer.run import build

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
CIFAR_RESNET = ("data=cifar10", "model=resnet", "model.channels=[8,16]", "model.blocks_per_stage=1",
                "data.batch_size=32")


@pytest.mark.parametrize("precision", MATMUL_PRECISIONS)
def test_a_run_sets_the_float32_matmul_precision_it_names(run_dir, precision):
    build(compose_config("trainer.device=cpu", f"trainer.matmul_precision={precision}"), run_dir)
    assert torch.get_float32_matmul_precision() == precision


@pytest.mark.parametrize("benchmark, deterministic, expected", [
    (None, False, True),   # fixed shapes: autotuning pays for itself after the first steps
    (None, True, False),   # deterministic needs the same algorithms every run
    (False, False, False),
    (True, False, True),
])
def test_cudnn_benchmark_on_cuda_follows_the_setting_and_deterministic(benchmark, deterministic, expected):
    torch.backends.cudnn.benchmark = not expected
    use_backend_settings(CUDA, cudnn_benchmark=benchmark, deterministic=deterministic)
    assert torch.backends.cudnn.benchmark is expected


def test_cudnn_benchmark_is_left_alone_on_a_cpu():
    torch.backends.cudnn.benchmark = False
    use_backend_settings(CPU, cudnn_benchmark=True)
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.parametrize("settings, key", [
    ({"cudnn_benchmark": True, "deterministic": True}, "cudnn_benchmark"),
    ({"compile_mode": "reduce-overhead"}, "compile_mode"),
    ({"compile_mode": "fastest", "compile": True}, "compile_mode"),
    ({"matmul_precision": "tf32"}, "matmul_precision"),
])
def test_settings_that_cannot_work_together_are_refused_naming_the_key(settings, key):
    with pytest.raises(ConfigError) as error:
        TrainerConfig(**settings)
    assert error.value.key == key and str(error.value).startswith(f"{key}: got ")


def resnet() -> ResNet:
    return ResNet(input_shape=(3, 8, 8), num_outputs=10, channels=[4, 8], blocks_per_stage=1)


@pytest.mark.parametrize("device, setting, expected", [
    (CPU, None, torch.contiguous_format),
    (CUDA, None, torch.channels_last),
    (CPU, True, torch.channels_last),
    (CUDA, False, torch.contiguous_format),
])
def test_channels_last_is_for_convolutional_models_on_cuda_unless_set(device, setting, expected):
    assert memory_format_for(resnet(), device, setting) == expected
    assert memory_format_for(MLP(input_shape=(4,), num_outputs=2), device, None if setting else setting) \
        == torch.contiguous_format


def test_channels_last_for_a_model_without_convolutions_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"trainer.channels_last: got True, expected false or null for MLP, which "
                                          r"has no 2-D convolution"):
        memory_format_for(MLP(input_shape=(4,), num_outputs=2), CPU, True)


def test_a_channels_last_run_serves_its_batches_and_keeps_its_weights_in_channels_last(run_dir):
    run = build(compose_config("trainer.device=cpu", "trainer.channels_last=true", *CIFAR_RESNET), run_dir)
    convolutions = [m.weight for m in run.engine.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    for batches in (run.train, run.val, run.test):
        x, _ = next(iter(batches))
        assert x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def test_channels_last_trains_to_the_same_losses_as_contiguous_memory(tmp_path):
    """The memory format is a layout, not a model: the same run in either trains alike (to float32 rounding)."""
    losses = {}
    for setting in ("false", "true"):
        (tmp_path / setting).mkdir()
        run = build(compose_config("trainer.device=cpu", f"trainer.channels_last={setting}", "trainer.max_epochs=2",
                                   *CIFAR_RESNET), tmp_path / setting)
        run.engine.fit(run.train, run.val)
        losses[setting] = [row["train_loss"] for row in run.metrics_log.rows]
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
    assert losses["true"][-1] < losses["true"][0]

