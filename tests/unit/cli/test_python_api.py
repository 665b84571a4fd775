"""train, evaluate and predict called from Python: the command's run directory, records and one-line mistakes, as
values and exceptions, with Hydra's global state and the root logger left as the caller had them."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

import trainer
from trainer.models import MLP

MOONS = ("data=moons", "model.hidden_sizes=[16]", "trainer.max_epochs=3", "trainer.device=cpu", "trainer.curves=false")


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory) -> dict:
    return trainer.train(*MOONS, f"hydra.run.dir={tmp_path_factory.mktemp('runs') / 'moons'}")


def test_train_returns_summary_json_with_the_run_directory(moons_run):
    run_dir = Path(moons_run["run_dir"])
    assert moons_run == {**json.loads((run_dir / "summary.json").read_text()), "run_dir": str(run_dir)}
    assert moons_run["epochs"] == 3 and moons_run["stop_reason"] == "max_epochs"
    assert moons_run["test"]["accuracy"] > 0.8


def test_the_run_directory_holds_what_the_command_writes(moons_run):
    run_dir = Path(moons_run["run_dir"])
    assert sorted(path.name for path in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml",
                                                                            "overrides.yaml"]
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines() == [f"- {o}" for o in MOONS]
    assert "mode: RUN" in (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert (run_dir / "checkpoints" / "best.pt").is_file() and not (run_dir / ".train.lock").exists()
    log = (run_dir / "train.log").read_text()
    assert "epoch 3/3" in log and re.search(r"^  accuracy +0\.\d+$", log, re.MULTILINE)


def test_the_default_run_directory_is_the_command_s(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = trainer.train(*MOONS, "trainer.max_epochs=1")
    relative = Path(summary["run_dir"]).relative_to(tmp_path)
    assert re.fullmatch(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}", relative.as_posix())


def test_find_lr_returns_the_suggestion_and_its_csv(tmp_path):
    found = trainer.train(*MOONS, "trainer.find_lr=true", "trainer.lr_find.num_steps=40",
                          f"hydra.run.dir={tmp_path / 'lr'}")
    assert found["run_dir"] == str(tmp_path / "lr") and Path(found["lr_find_csv"]).is_file()
    assert found["suggested_lr"] is None or 1e-7 < found["suggested_lr"] < 10


def test_fast_dev_run_returns_its_metric_though_it_keeps_no_summary(tmp_path):
    checked = trainer.train(*MOONS, "trainer.fast_dev_run=2", f"hydra.run.dir={tmp_path / 'dev'}")
    assert checked["fast_dev_run"] == 2 and checked["best_value"] > 0
    assert not (tmp_path / "dev" / "summary.json").exists()


@pytest.mark.parametrize("override", ["model=nope", "optimizer.lr=abc", "trainer.max_epochs=0", "trainer.nope=1",
                                      "optimizer=sgd,adam", "data.noise=-1"])
def test_a_mistake_raises_the_command_s_one_line_and_writes_nothing(override, tmp_path, train_in_this_process,
                                                                    monkeypatch):
    command = train_in_this_process(*MOONS, override, cwd=tmp_path)
    assert command.returncode == 2
    monkeypatch.chdir(tmp_path)
    with pytest.raises(trainer.UsageError) as error:
        trainer.train(*MOONS, override)
    assert command.stderr == f"train: error: {error.value}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_a_sweep_is_refused_in_one_line_pointing_at_the_command(flag):
    with pytest.raises(trainer.UsageError, match=f"^{flag}: a sweep runs only from the command"):
        trainer.train(flag, "optimizer.lr=1e-3,1e-2")


def test_two_calls_in_one_process_leave_hydra_and_the_root_logger_as_the_caller_had_them(tmp_path):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with initialize_config_dir(str(tmp_path), version_base="1.3"):  # the caller's own Hydra
        caller_hydra = GlobalHydra.instance().hydra
        first = trainer.train(*MOONS, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'first'}")
        second = trainer.train(*MOONS, "trainer.max_epochs=2", "optimizer=sgd",
                               f"hydra.run.dir={tmp_path / 'second'}")
        assert GlobalHydra.instance().hydra is caller_hydra
    assert (first["epochs"], second["epochs"]) == (1, 2)
    # The run's choices come from its own HydraConfig, each time.
    assert "optimizer: sgd" in (tmp_path / "second" / ".hydra" / "hydra.yaml").read_text()
    assert not HydraConfig.initialized()
    assert (root.handlers, root.level) == (handlers, level)


def test_two_threads_calling_train_at_once_each_get_their_own_run(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    run_dirs = [tmp_path / "a", tmp_path / "b"]
    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(lambda run_dir: trainer.train(*MOONS, "trainer.max_epochs=1",
                                                                 f"hydra.run.dir={run_dir}"), run_dirs))
    assert [summary["run_dir"] for summary in summaries] == [str(run_dir) for run_dir in run_dirs]
    for run_dir in run_dirs:  # each run's records say its own directory, not the other's
        assert f"dir: {run_dir}" in (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert GlobalHydra.instance().hydra is None


def test_a_finished_run_carried_on_with_resume_auto_returns_its_summary_and_trains_nothing(tmp_path):
    run = (*MOONS, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}", "trainer.resume=auto")
    first = trainer.train(*run)
    metrics_time = (tmp_path / "metrics.csv").stat().st_mtime_ns
    assert trainer.train(*run) == first
    assert (tmp_path / "metrics.csv").stat().st_mtime_ns == metrics_time


def test_a_run_directory_in_use_is_refused_naming_its_holder(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    with pytest.raises(trainer.UsageError, match=f"pid {holder.pid}"):
        trainer.train(*MOONS, f"hydra.run.dir={tmp_path}")


class SignalledMLP(MLP):
    """An MLP whose first training step sends this process SIGTERM, as a job's end would."""

    def forward(self, x):
        if self.training and not getattr(self, "signalled", False):
            self.signalled = True
            os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(x)


def test_a_signal_raises_interrupted_once_last_pt_and_the_summary_are_saved(tmp_path):
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(trainer.Interrupted, match=r"interrupted by SIGTERM: .*'trainer\.resume=auto'") as stopped:
        trainer.train(*MOONS, f"model._target_={__name__}.SignalledMLP", f"hydra.run.dir={tmp_path}")
    assert stopped.value.summary["stop_reason"] == "interrupted"
    assert stopped.value.summary["run_dir"] == str(tmp_path)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) == handler


def test_a_signal_stopping_a_dev_run_raises_interrupted_saying_nothing_was_kept(tmp_path):
    with pytest.raises(trainer.Interrupted, match=r"^train: interrupted by SIGTERM: trainer.fast_dev_run keeps "
                                                  r"nothing") as stopped:
        trainer.train(*MOONS, "trainer.fast_dev_run=3", f"model._target_={__name__}.SignalledMLP",
                      f"hydra.run.dir={tmp_path}")
    assert stopped.value.summary == {"run_dir": str(tmp_path)}
    assert sorted(path.name for path in tmp_path.iterdir()) == [".hydra", "train.log"]
    log = (tmp_path / "train.log").read_text()
    assert "stopped by SIGTERM at epoch 1, step 1; trainer.fast_dev_run keeps nothing" in log
    assert "resume" not in log


def test_evaluate_returns_the_metrics_of_the_run_s_test(moons_run, tmp_path):
    evaluation = trainer.evaluate(f"ckpt_path={moons_run['run_dir']}/checkpoints/best.pt", "device=cpu",
                                  f"output_dir={tmp_path}")
    assert evaluation["test"] == moons_run["test"]
    assert evaluation["written"] == [str(tmp_path / "evaluation.json"), str(tmp_path / "confusion.png")]
    assert json.loads((tmp_path / "evaluation.json").read_text()) == {
        key: value for key, value in evaluation.items() if key != "written"}


def test_predict_returns_a_dict_per_row(moons_run, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"x0": -1.0, "x1": 0.5}, {"x0": 2.0, "x1": -0.5}]))
    predictions = trainer.predict(f"ckpt_path={moons_run['run_dir']}/checkpoints/best.pt", f"input={rows}",
                                  "device=cpu")
    assert [p["sample"] for p in predictions] == ["row 1", "row 2"]
    assert [p["predicted"] for p in predictions] == ["0", "1"]  # the upper moon's left end, the lower's right end
    assert all(sum(p["probabilities"].values()) == pytest.approx(1) for p in predictions)


@pytest.mark.parametrize("command, overrides", [
    ("evaluate", ("ckpt_path=missing.pt",)),
    ("predict", ("ckpt_path=CHECKPOINT", "input=missing.csv")),
    ("predict", ("ckpt_path=CHECKPOINT", "input=rows.csv", "top_k=0")),
    ("evaluate", ("nope=1",)),
])
def test_evaluate_and_predict_raise_the_command_s_one_line(command, overrides, moons_run, tmp_path,
                                                           train_in_this_process, monkeypatch):
    checkpoint = f"{moons_run['run_dir']}/checkpoints/best.pt"
    overrides = [override.replace("CHECKPOINT", checkpoint) for override in overrides]
    printed = train_in_this_process(*overrides, cwd=tmp_path, command=command)
    assert printed.returncode == 2
    monkeypatch.chdir(tmp_path)
    with pytest.raises(trainer.UsageError) as error:
        getattr(trainer, command)(*overrides)
    assert printed.stderr == f"{command}: error: {error.value}\n"
