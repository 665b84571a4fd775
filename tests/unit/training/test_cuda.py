"""The CUDA paths in this process, on a real GPU: fused Adam, bf16 and fp16 autocast (the GradScaler, non-finite
steps), inductor's torch.compile, exact resume after a signal, channels-last convolutions and cuDNN autotuning. Each
test is skipped, saying why, where torch sees no CUDA device; `pytest -m cuda` selects them, with
tests/e2e/test_cuda_commands.py's (torchrun, checkpoints that move to the CPU, `train` processes resumed).

Runs are tiny (digits, a 32-unit MLP, 2 to 4 epochs) so that the file takes a minute or so on a GPU, most of it
inductor compiling."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import compose_config, metrics_rows
from helpers.cuda import DIVERGING, ON_CUDA, SMALL_MLP, assert_same_weights
from helpers.signals import signal_during_step
from trainer.training.checkpoint import load_checkpoint
from trainer.data import Batcher
from trainer.vocabulary import StopReason
from trainer.training.outputs import outputs_and_targets
from trainer.training.losses import targets_for
from trainer.run import Run, build

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CLEARLY_LOWER = 0.75
"""A training loss 'went clearly down' when it ends below this fraction of where it started."""
CIFAR_RESNET = ("data=cifar10", "model=resnet", "model.channels=[8,16]", "model.blocks_per_stage=1",
                "data.batch_size=32", "optimizer.lr=0.01")
"""The CIFAR-10 stand-in (450 images to train) through a ResNet shrunk to two stages of one block."""


# --- helpers ----------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def deterministic_mode_put_back():
    """A run built in this process with trainer.deterministic=true turns torch's deterministic mode on for the whole
    process (and sets CUBLAS_WORKSPACE_CONFIG): each test leaves both as it found them."""
    mode = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
    if workspace is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def build_run(run_dir: Path, *overrides: str) -> Run:
    """A run of `train ... trainer.device=cuda OVERRIDES`, built in this process and ready to fit (3 epochs unless
    the overrides say otherwise)."""
    return build(compose_config(ON_CUDA, *overrides), run_dir)


@torch.inference_mode()
def train_split_loss(run: Run) -> float:
    """The loss of the plain model (never a compiled one) over the whole train split, in order and without
    augmentation, at the run's precision and in its memory format."""
    device, (x, y) = run.engine.device, run.data.train
    batches = Batcher(x.to(device), y.to(device), batch_size=1024, shuffle=False,
                      normalize=run.data.description.pixels,
                      memory_format=run.train.memory_format)
    model, training = run.engine.model, run.engine.model.training
    model.eval()
    try:
        with run.engine.precision.autocast():
            output, targets = outputs_and_targets(model, batches)  # float32 (N, num_outputs), (N,)
    finally:
        model.train(training)
    return run.engine.criterion(output, targets_for(run.engine.criterion, targets)).item()


def assert_clearly_lower(before: float, after: float) -> None:
    assert after < CLEARLY_LOWER * before, f"train loss {before:.4f} -> {after:.4f}"


def float_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in state.items() if tensor.is_floating_point()}


def assert_float32_checkpoints(checkpoint_dir: Path) -> None:
    """best.pt and last.pt hold float32 weights and float32 Adam moments, whatever the autocast precision."""
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(checkpoint_dir / name)
        weights = float_tensors(state["model"])
        assert weights and {t.dtype for t in weights.values()} == {torch.float32}, (name, weights.keys())
        moments = [value for per_parameter in state["optimizer"]["state"].values()
                   for key, value in per_parameter.items() if key in ("exp_avg", "exp_avg_sq")]
        assert moments and {m.dtype for m in moments} == {torch.float32}, name


def dtypes_of_head_output(run: Run) -> list[torch.dtype]:
    """The dtypes of the model's head output, one per forward pass from now on."""
    seen: list[torch.dtype] = []
    run.engine.model.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def first_batch(batches: Batcher) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch `batches` serves first, leaving it where it was (a run's epoch starts at its first batch still)."""
    state = batches.state_dict()
    x, y = next(iter(batches))
    batches.load_state_dict(state)
    return x, y


# --- 1. Adam on cuda is fused -----------------------------------------------------------------------------------

def test_adam_on_cuda_takes_fused_steps_on_the_gpu_and_lowers_the_loss(run_dir):
    run = build_run(run_dir, SMALL_MLP, "optimizer=adam")  # optimizer.fused: null, fused where torch has it
    optimizer = run.engine.optimizer
    assert type(optimizer) is torch.optim.Adam and run.engine.device.type == "cuda"
    assert [group["fused"] for group in optimizer.param_groups] == [True] * len(optimizer.param_groups)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    assert parameters and all(p.is_cuda for p in parameters)
    assert run.train.x.is_cuda and run.train.y.is_cuda  # the data set lives on the GPU (data.pipeline=device)

    before = train_split_loss(run)
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs) == (StopReason.MAX_EPOCHS, 3)
    assert_clearly_lower(before, train_split_loss(run))
    # The fused kernel keeps its state, the step count too, on the GPU; every step of the run went through it.
    state = optimizer.state[parameters[0]]
    assert state["step"].is_cuda and state["exp_avg"].is_cuda and state["exp_avg_sq"].is_cuda
    assert int(state["step"].item()) == run.engine.global_step == 3 * len(run.train)


# --- 2. bf16 autocast -------------------------------------------------------------------------------------------

def skip_without_bf16() -> None:
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"needs a GPU with bfloat16 (compute capability 8.0 or newer; this one is "
                    f"{torch.cuda.get_device_name()})")


def test_bf16_on_cuda_trains_a_bfloat16_forward_and_keeps_float32_weights(run_dir):
    skip_without_bf16()
    run = build_run(run_dir, SMALL_MLP, "trainer.precision=bf16")
    assert not run.engine.precision.scaler.is_enabled()  # bfloat16 has float32's range: no loss scaling
    head_dtypes = dtypes_of_head_output(run)
    before = train_split_loss(run)
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs) == (StopReason.MAX_EPOCHS, 3)
    assert_clearly_lower(before, train_split_loss(run))
    assert head_dtypes and set(head_dtypes) == {torch.bfloat16}
    assert {p.dtype for p in run.engine.model.parameters()} == {torch.float32}
    assert_float32_checkpoints(run_dir / "checkpoints")


# --- 3. fp16 and the GradScaler ---------------------------------------------------------------------------------

def test_fp16_on_cuda_trains_through_the_grad_scaler_and_checkpoints_its_scale(run_dir):
    run = build_run(run_dir, SMALL_MLP, "trainer.precision=16")
    scaler = run.engine.precision.scaler
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16  # GradScaler's initial scale
    head_dtypes = dtypes_of_head_output(run)
    before = train_split_loss(run)
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs, run.engine.nonfinite.skipped_steps) == (StopReason.MAX_EPOCHS, 3, 0)
    assert_clearly_lower(before, train_split_loss(run))
    assert head_dtypes and set(head_dtypes) == {torch.float16}
    assert 1 <= scaler.get_scale() < math.inf
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["scaler"]["scale"] == scaler.get_scale()
    assert_float32_checkpoints(run_dir / "checkpoints")


def test_fp16_on_cuda_at_a_huge_learning_rate_with_skip_counts_the_skipped_steps(run_dir, caplog):
    run = build_run(run_dir, *DIVERGING, "trainer.on_nonfinite=skip", "trainer.max_skipped=3", "trainer.max_epochs=5")
    assert run.engine.precision.scaler.is_enabled()
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs) == (StopReason.DIVERGED, 0)
    assert run.engine.nonfinite.skipped_steps == 4  # one more than max_skipped ends the run
    assert re.fullmatch(r"epoch 1, step \d+: 4 steps skipped for non-finite values, more than "
                        r"trainer.max_skipped=3; stopping\. .*", run.engine.nonfinite.divergence), run.engine.nonfinite.divergence
    skipped = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert [re.search(r"\((\d) of at most 3\)", line).group(1) for line in skipped] == ["1", "2", "3", "4"]
    # A skipped step leaves the weights alone: none of the non-finite steps reached them.
    assert all(torch.isfinite(p).all() for p in run.engine.model.parameters())


# --- 4. torch.compile with inductor -----------------------------------------------------------------------------

@pytest.fixture
def dynamo_counters():
    """torch.compile's caches emptied before and after (a test here compiles a new model; the cache of a code object
    holds a few entries, beyond which it silently runs eager), and its counters from zero."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_with_inductor_on_cuda_trains_and_checkpoints_the_plain_model(run_dir, dynamo_counters, mode):
    # Batches of 74 split digits' 1,258 training samples evenly: one shape to compile for training.
    run = build_run(run_dir, SMALL_MLP, "trainer.compile=true", f"trainer.compile_mode={mode}",
                    "trainer.max_epochs=2", "data.batch_size=74", "optimizer.lr=0.003")
    engine = run.engine
    assert isinstance(engine.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert engine.train_model._orig_mod is engine.model and engine.eval_model is engine.train_model

    before = train_split_loss(run)
    result = engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs) == (StopReason.MAX_EPOCHS, 2)
    assert_clearly_lower(before, train_split_loss(run))
    assert dynamo_counters["stats"]["unique_graphs"] >= 1  # dynamo captured the model: it did not run eagerly
    if mode == "reduce-overhead":
        assert dynamo_counters["inductor"]["cudagraph_skips"] == 0  # CUDA graphs were used, not skipped
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert not any(name.startswith("_orig_mod.") for name in saved)
    assert_same_weights(engine.model.state_dict(), saved)  # the plain model's keys, and its weights


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_compiled_model_on_cuda_validates_over_several_batches_as_the_plain_model_does(run_dir, dynamo_counters,
                                                                                           mode):
    """Real data sets validate in several batches (MNIST: 6,000 samples in batches of eval_batch_size=1024). Under
    CUDA graphs (reduce-overhead) each call of the compiled model may reuse the memory of the last one's output, so
    the outputs the engine collects batch by batch must still be those batches' outputs when it joins them."""
    run = build_run(run_dir, SMALL_MLP, "trainer.compile=true", f"trainer.compile_mode={mode}",
                    "trainer.max_epochs=1", "data.batch_size=74", "trainer.eval_batch_size=64")  # 180 = 64 + 64 + 52
    result = run.engine.fit(run.train, run.val)  # validates once, in 3 batches
    assert result.stop_reason is StopReason.MAX_EPOCHS
    compiled = run.engine.evaluate(run.val)
    run.engine.eval_model = run.engine.model
    plain = run.engine.evaluate(run.val)
    assert compiled["loss"] == pytest.approx(plain["loss"], rel=1e-3)
    assert compiled["accuracy"] == pytest.approx(plain["accuracy"], abs=1.5 / 180)  # one near-tie may flip
    assert float(metrics_rows(run_dir)[0]["val_loss"]) == pytest.approx(plain["loss"], rel=1e-3)


# --- 5. exact resume on cuda ------------------------------------------------------------------------------------

EXACT = ("model=dropout_net", "model.hidden_sizes=[16]", "data=moons", "data.n_samples=200", "data.batch_size=32",
         "scheduler=cosine", "trainer.deterministic=true", "trainer.max_epochs=2")
"""140 training samples in 5 batches an epoch, the last one short; dropout and a per-step cosine schedule."""


def test_a_run_on_cuda_stopped_mid_epoch_by_a_signal_resumes_bit_identical(tmp_path):
    for name in ("whole", "part"):
        (tmp_path / name).mkdir()
    whole = build_run(tmp_path / "whole", *EXACT)
    whole.engine.fit(whole.train, whole.val)

    stopped = build_run(tmp_path / "part", *EXACT)
    signal_during_step(stopped.engine, after_step=7)
    result = stopped.engine.fit(stopped.train, stopped.val)
    assert (result.stop_reason, stopped.engine.global_step) == (StopReason.INTERRUPTED, 8)
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert state["batcher"] == {"seed": 0, "epoch": 1, "position": 3}  # mid-way through epoch 2
    torch.manual_seed(12345)  # whatever the generators did since (the GPU's too), the checkpoint's states must win

    resumed = build_run(tmp_path / "part", *EXACT, "trainer.resume=auto")
    resumed.engine.fit(resumed.train, resumed.val)
    assert_same_weights(whole.engine.model.state_dict(), resumed.engine.model.state_dict())
    assert metrics_rows(tmp_path / "part") == metrics_rows(tmp_path / "whole")


# --- 6. channels-last convolutions and cuDNN autotuning ---------------------------------------------------------

def convolution_weights(run: Run) -> list[torch.Tensor]:
    return [m.weight for m in run.engine.model.modules() if isinstance(m, torch.nn.Conv2d)]


def in_channels_last(tensor: torch.Tensor) -> bool:
    """Laid out (N, H, W, C). A 1x1 kernel is both layouts at once, so only the memory format is asked of it."""
    laid_out = tensor.is_contiguous(memory_format=torch.channels_last)
    return laid_out and (tensor.shape[-2:] == (1, 1) or not tensor.is_contiguous())


def test_a_resnet_on_cuda_runs_channels_last_in_bf16_with_cudnn_autotuning(run_dir):
    skip_without_bf16()
    run = build_run(run_dir, *CIFAR_RESNET, "trainer.precision=bf16")  # trainer.channels_last: null
    assert run.engine.settings.channels_last is None and run.engine.settings.cudnn_benchmark is None
    assert torch.backends.cudnn.benchmark is True  # fixed shapes, not deterministic: autotuned
    weights = convolution_weights(run)
    assert weights and all(w.is_cuda and in_channels_last(w) for w in weights)
    for batches in (run.train, run.val, run.test):
        x, _ = first_batch(batches)
        assert x.is_cuda and x.dim() == 4 and in_channels_last(x)
    stem = next(m for m in run.engine.model.modules() if isinstance(m, torch.nn.Conv2d))
    stem_outputs: list[tuple[torch.dtype, bool]] = []  # (dtype, channels-last) of each output of the first conv
    stem.register_forward_hook(lambda module, inputs, output: stem_outputs.append((output.dtype,
                                                                                  in_channels_last(output))))
    head_dtypes = dtypes_of_head_output(run)

    before = train_split_loss(run)
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs) == (StopReason.MAX_EPOCHS, 3)
    assert_clearly_lower(before, train_split_loss(run))
    # The convolutions ran in bfloat16 on channels-last tensors, and the steps kept the weights channels-last.
    assert stem_outputs and set(stem_outputs) == {(torch.bfloat16, True)}
    assert head_dtypes and set(head_dtypes) == {torch.bfloat16}
    assert all(in_channels_last(w) and w.dtype == torch.float32 for w in convolution_weights(run))
    assert_float32_checkpoints(run_dir / "checkpoints")


@pytest.mark.parametrize("overrides, benchmark", [
    ([], True),
    (["trainer.deterministic=true"], False),
    (["trainer.cudnn_benchmark=false"], False),
    (["trainer.channels_last=false"], True),
], ids=["default", "deterministic", "benchmark-off", "contiguous"])
def test_cudnn_autotuning_on_cuda_is_on_unless_deterministic_or_turned_off(run_dir, overrides, benchmark):
    torch.backends.cudnn.benchmark = not benchmark
    run = build_run(run_dir, *CIFAR_RESNET, "trainer.max_epochs=1", *overrides)
    assert torch.backends.cudnn.benchmark is benchmark
    channels_last = "trainer.channels_last=false" not in overrides
    assert all(in_channels_last(w) == channels_last for w in convolution_weights(run) if w.shape[-2:] != (1, 1))
    before = train_split_loss(run)
    run.engine.fit(run.train, run.val)  # deterministic: every kernel of a step has a deterministic version
    assert train_split_loss(run) < before


def test_a_deterministic_resnet_run_on_cuda_repeats_bit_for_bit(tmp_path):
    """trainer.deterministic=true on a GPU: cuDNN's deterministic algorithms, no autotuning, and the augmentation's
    generators seeded per batch, so a second run ends with the very same weights and metrics."""
    weights = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        run = build_run(tmp_path / name, *CIFAR_RESNET, "trainer.deterministic=true", "trainer.max_epochs=2")
        run.engine.fit(run.train, run.val)
        weights.append(run.engine.model.state_dict())
    assert_same_weights(*weights)
    assert metrics_rows(tmp_path / "first") == metrics_rows(tmp_path / "second")

