"""The CUDA paths, on a real GPU: fused Adam, bf16 and fp16 autocast (the GradScaler, non-finite steps), inductor's
torch.compile, torchrun over nccl, checkpoints that move to the CPU, exact resume, channels-last convolutions and
cuDNN autotuning. Each test is skipped, saying why, where torch sees no CUDA device; `pytest -m cuda` selects them.

Runs are tiny (digits, a 32-unit MLP, 2 to 4 epochs) so that the file takes a minute or two on a GPU, most of it
inductor compiling and the `train`/`torchrun` processes starting."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import compose_config, metrics_rows
from helpers.signals import signal_during_step
from trainer.training.checkpoint import load_checkpoint
from trainer.data import Batcher
from trainer.training.progress import StopReason
from trainer.training.outputs import outputs_and_targets
from trainer.training.losses import targets_for
from trainer.run import Run, build

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ON_CUDA = "trainer.device=cuda"
SMALL_MLP = "model.hidden_sizes=[32]"
"""Where the model is not what a test is about, a small one keeps the test fast."""
CLEARLY_LOWER = 0.75
"""A training loss 'went clearly down' when it ends below this fraction of where it started."""
CIFAR_RESNET = ("data=cifar10", "model=resnet", "model.channels=[8,16]", "model.blocks_per_stage=1",
                "data.batch_size=32", "optimizer.lr=0.01")
"""The CIFAR-10 stand-in (450 images to train) through a ResNet shrunk to two stages of one block."""

BIN = Path(sys.executable).parent
TRAIN, EVALUATE, PREDICT, TORCHRUN = (shutil.which(name, path=str(BIN))
                                      for name in ("train", "evaluate", "predict", "torchrun"))
"""The console scripts installed next to this Python."""
DDP_WORKER = Path(__file__).with_name("ddp_worker.py")
"""`python -m trainer` that also saves each process's final parameters as parameters.rank<N>.pt."""


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


def run_command(command: list[str], cwd: Path, extra_env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"} | (extra_env or {})
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-6000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-6000:]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    """The same tensor names, and every tensor bit for bit (compared on the CPU)."""
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(tensor.cpu(), actual[name].cpu()), name


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


DIVERGING = (SMALL_MLP, "trainer.precision=16", "optimizer=sgd", "optimizer.lr=1e4")
"""SGD at a learning rate of 1e4: within a few steps the weights are so large that the float16 forward overflows."""


def test_fp16_on_cuda_at_a_huge_learning_rate_stops_the_run_naming_the_divergence(tmp_path, train_in_this_process):
    run_dir = tmp_path / "run"
    result = train_in_this_process(ON_CUDA, *DIVERGING, "trainer.on_nonfinite=stop", "trainer.max_epochs=5",
                                   "trainer.curves=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr, result.stderr[-6000:]
    summary = summary_of(run_dir)
    assert (summary["stop_reason"], summary["epochs"], summary["best_epoch"], summary["test"]) == (
        "diverged", 0, None, {})
    assert summary["device"] == "cuda"
    said = re.search(r"epoch 1, step \d+: the loss is not finite, at learning rate 1e\+04; stopping "
                     r"\(trainer.on_nonfinite=stop\)", (run_dir / "train.log").read_text())
    assert said, (run_dir / "train.log").read_text()[-3000:]
    assert not (run_dir / "checkpoints" / "best.pt").exists()  # nothing non-finite was saved
    assert not (run_dir / "checkpoints" / "last.pt").exists()


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


# --- 5. torchrun: DDP over nccl ---------------------------------------------------------------------------------

@pytest.mark.parametrize("processes", [
    1,
    pytest.param(2, marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")),
])
def test_torchrun_on_cuda_trains_with_one_gpu_per_process(tmp_path, processes):
    assert TORCHRUN, f"no `torchrun` next to {sys.executable}"
    run_dir = tmp_path / "run"
    result = run_command([TORCHRUN, "--standalone", f"--nproc_per_node={processes}", str(DDP_WORKER),
                          "data=digits", ON_CUDA, "trainer.max_epochs=3", "trainer.curves=false",
                          f"hydra.run.dir={run_dir}"], tmp_path)
    assert_succeeded(result)

    summary = summary_of(run_dir)
    # One process is a lone run on the default GPU; with several, rank 0 is on cuda:0 (LOCAL_RANK).
    assert (summary["processes"], summary["device"]) == (processes, "cuda" if processes == 1 else "cuda:0")
    assert (summary["stop_reason"], summary["epochs"]) == ("max_epochs", 3)
    assert summary["steps"] == 3 * math.ceil(summary["train_samples"] / 64)  # data.batch_size is the global batch
    assert summary["test"]["accuracy"] > 0.85  # the default MLP: 0.93 after 3 epochs on a CPU
    losses = [float(row["train_loss"]) for row in metrics_rows(run_dir)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    suffix = f" x {processes} processes" if processes > 1 else ""
    assert f"parameters on {summary['device']}{suffix}\n" in (run_dir / "train.log").read_text()
    # Every process ends with the weights rank 0 saved: DDP averaged the same gradients into each.
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    for rank in range(processes):
        parameters = torch.load(run_dir / f"parameters.rank{rank}.pt", map_location="cpu", weights_only=True)
        assert_same_weights(saved, parameters)


# --- 6. a checkpoint trained on cuda, evaluated and used on the CPU ---------------------------------------------

TABLE_ROWS = 5


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    assert TRAIN, f"no `train` console script next to {sys.executable}"
    return [TRAIN, *overrides, "trainer.curves=false", f"hydra.run.dir={run_dir}"]


def test_a_checkpoint_trained_on_cuda_evaluates_and_predicts_on_the_cpu(tmp_path, train_in_this_process,
                                                                          offline_data_sets):
    # Trained, and evaluated on its GPU, in processes of their own, as a user runs them: each process sets up
    # cuBLAS afresh, so no test run before in this one can make them multiply differently.
    run_dir, table = tmp_path / "run", offline_data_sets / "table.csv"  # three classes named by text labels
    assert_succeeded(run_command(train_command(run_dir, ON_CUDA, "data=csv", f"data.path={table}",
                                               "data.target=colour", "model.hidden_sizes=[16]", "data.batch_size=16",
                                               "optimizer.lr=0.01", "trainer.max_epochs=3"), tmp_path))
    summary, best = summary_of(run_dir), run_dir / "checkpoints" / "best.pt"
    assert summary["device"] == "cuda" and summary["test"]["accuracy"] > 0.5
    # The file holds GPU tensors, as torch.save wrote them: the readers must bring them to the CPU themselves.
    raw = torch.load(best, weights_only=True)
    assert all(tensor.is_cuda for tensor in raw["model"].values())

    # evaluate on the GPU it trained on: summary.json's test to the last bit (the run's test is the same code).
    on_gpu = run_command([EVALUATE, f"ckpt_path={best}", "device=cuda", f"output_dir={tmp_path / 'gpu'}"], tmp_path)
    assert_succeeded(on_gpu)
    gpu = json.loads((tmp_path / "gpu" / "evaluation.json").read_text())
    assert gpu["device"] == "cuda" and gpu["test"] == summary["test"]
    # evaluate on a machine without a GPU (none visible to the process): the same metrics, to float32 rounding.
    on_cpu = run_command([EVALUATE, f"ckpt_path={best}", "device=cpu", f"output_dir={tmp_path / 'cpu'}"], tmp_path,
                         extra_env={"CUDA_VISIBLE_DEVICES": ""})
    assert_succeeded(on_cpu)
    cpu = json.loads((tmp_path / "cpu" / "evaluation.json").read_text())
    assert cpu["device"] == "cpu" and "on cpu)" in on_cpu.stdout
    assert cpu["test"]["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-4)
    assert cpu["test"]["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1.5 / cpu["samples"])
    assert cpu["samples"] == gpu["samples"] and sum(map(sum, cpu["confusion_matrix"])) == cpu["samples"]

    # predict on the CPU and on the GPU (in this process): the same classes and probabilities.
    with open(table, newline="") as file:
        header, *rows = list(csv.reader(file))
    (tmp_path / "rows.csv").write_text("\n".join(",".join(row) for row in [header, *rows[:TABLE_ROWS]]) + "\n")
    predicted = {}
    for device in ("cpu", "cuda"):
        result = train_in_this_process(f"ckpt_path={best}", f"input={tmp_path / 'rows.csv'}", f"device={device}",
                                       f"output={tmp_path / device}.csv", cwd=tmp_path, command="predict")
        assert_succeeded(result)
        with open(tmp_path / f"{device}.csv", newline="") as file:
            predicted[device] = list(csv.DictReader(file))
    assert [row["sample"] for row in predicted["cpu"]] == [f"row {n}" for n in range(1, TABLE_ROWS + 1)]
    classes = [name for name in predicted["cpu"][0] if name not in ("sample", "predicted")]
    assert sorted(classes) == ["blue", "green", "red"]
    for cpu_row, gpu_row in zip(predicted["cpu"], predicted["cuda"], strict=True):
        assert cpu_row["predicted"] == gpu_row["predicted"]
        assert [float(cpu_row[c]) for c in classes] == pytest.approx([float(gpu_row[c]) for c in classes], abs=1e-5)
    labels = [row[header.index("colour")] for row in rows[:TABLE_ROWS]]
    assert sum(row["predicted"] == label for row, label in zip(predicted["cpu"], labels)) >= TABLE_ROWS - 1


def test_evaluate_on_cuda_repeats_the_test_metrics_of_a_run_trained_with_tensorfloat32(tmp_path):
    """trainer.matmul_precision=high multiplies float32 matrices in TensorFloat-32 on the GPU. evaluate, on the device
    the run trained on, gives summary.json's test to the last bit (README), so it must multiply as the run did."""
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip(f"TensorFloat-32 needs compute capability 8.0 or newer ({torch.cuda.get_device_name()})")
    run_dir = tmp_path / "run"
    assert_succeeded(run_command(train_command(run_dir, ON_CUDA, "trainer.matmul_precision=high",
                                               "trainer.max_epochs=2"), tmp_path))
    summary = summary_of(run_dir)
    evaluated = run_command([EVALUATE, f"ckpt_path={run_dir / 'checkpoints' / 'best.pt'}", "device=cuda",
                             f"output_dir={tmp_path / 'gpu'}"], tmp_path)
    assert_succeeded(evaluated)
    assert json.loads((tmp_path / "gpu" / "evaluation.json").read_text())["test"] == summary["test"]


# --- 7. exact resume on cuda ------------------------------------------------------------------------------------

RESUMABLE = (ON_CUDA, "model=dropout_net", "model.hidden_sizes=[32]", "trainer.deterministic=true",
             "data.batch_size=128")
"""Dropout draws from the GPU's random generator: a resume that did not bring its state back would show."""


def test_a_run_on_cuda_resumed_with_resume_auto_ends_bit_identical(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    # Every run in a process of its own, as a user runs them (cuBLAS set up alike in each): the whole run and the
    # first part at once, then a fresh `train` carries the part on, with nothing but its run directory to go by.
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(run_command, train_command(run_dir, *RESUMABLE, f"trainer.max_epochs={epochs}"),
                               tmp_path) for run_dir, epochs in ((whole, 4), (part, 2))]
        for future in started:
            assert_succeeded(future.result())
    resumed = run_command(train_command(part, *RESUMABLE, "trainer.max_epochs=4", "trainer.resume=auto"), tmp_path)
    assert_succeeded(resumed)
    assert f"resumed from {part / 'checkpoints' / 'last.pt'}" in resumed.stdout + resumed.stderr
    assert_same_weights(load_checkpoint(whole / "checkpoints" / "last.pt")["model"],
                        load_checkpoint(part / "checkpoints" / "last.pt")["model"])
    assert metrics_rows(part) == metrics_rows(whole) and len(metrics_rows(whole)) == 4
    assert (summary_of(part)["device"], summary_of(part)["starts"]) == ("cuda", 2)


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


# --- 8. channels-last convolutions and cuDNN autotuning ---------------------------------------------------------

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
