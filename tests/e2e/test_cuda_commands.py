"""The CUDA paths as a user runs them, on a real GPU: a float16 run that diverges stops in one line, torchrun over
nccl, a checkpoint trained on cuda evaluated and used on the CPU, evaluate under TensorFloat-32, and `train`
processes resumed bit for bit. Each test is skipped, saying why, where torch sees no CUDA device; `pytest -m cuda`
selects them, with tests/unit/training/test_cuda.py's.

Runs are tiny (digits, a 32-unit MLP, 2 to 4 epochs): most of the file's time is the `train`, `evaluate` and
`torchrun` processes starting."""

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

from conftest import metrics_rows
from helpers.cuda import DIVERGING, ON_CUDA, assert_same_weights
from trainer.training.checkpoint import load_checkpoint

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

BIN = Path(sys.executable).parent
TRAIN, EVALUATE, PREDICT, TORCHRUN = (shutil.which(name, path=str(BIN))
                                      for name in ("train", "evaluate", "predict", "torchrun"))
"""The console scripts installed next to this Python."""
DDP_WORKER = Path(__file__).with_name("ddp_worker.py")
"""`python -m trainer` that also saves each process's final parameters as parameters.rank<N>.pt."""


# --- helpers ----------------------------------------------------------------------------------------------------

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


# --- 1. fp16 at a learning rate that overflows it ---------------------------------------------------------------

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


# --- 2. torchrun: DDP over nccl ---------------------------------------------------------------------------------

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


# --- 3. a checkpoint trained on cuda, evaluated and used on the CPU ---------------------------------------------

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


# --- 4. exact resume on cuda ------------------------------------------------------------------------------------

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
