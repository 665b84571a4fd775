"""Sweeps run as a user runs them: a tiny `hparams_search=optuna` search runs its trials and records the best, and a
sweep started again carries on where it stopped and is reported. (tests/unit/config/test_sweep_configs.py checks
the search space itself.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from helpers.commands import assert_succeeded, train
from helpers.sweeps import PARSER, compose_search, in_space, search_space
from pausing_model import MODEL, TrainProcess


def test_a_tiny_search_runs_its_trials_and_records_the_best(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = train("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "data=moons", "trainer.max_epochs=2",
                   "trainer.curves=false", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert_succeeded(result)

    jobs = {job: json.loads((sweep_dir / job / "summary.json").read_text())["best_value"] for job in ("0", "1", "2")}
    assert sorted(path.name for path in sweep_dir.iterdir() if path.is_dir()) == ["0", "1", "2"]
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.best_value == min(jobs.values())
    best_job = min(jobs, key=jobs.get)
    overrides = OmegaConf.load(sweep_dir / best_job / ".hydra" / "overrides.yaml")
    assert {f"{key}={value}" for key, value in results.best_params.items()} <= set(overrides)

    space = search_space(compose_search())
    for key, value in results.best_params.items():
        # As the trial's override set it: a list option is recorded as its text, e.g. '[128,64]'.
        assert in_space(PARSER.parse_override(f"{key}={value}").value(), space[key]), (key, value)


def test_a_sweep_started_again_skips_its_finished_jobs_resumes_the_interrupted_one_and_is_reported(tmp_path):
    # Job 0 takes 4 steps (2 batches of 512 x 2 epochs), job 1 pauses at its step 10 of 44: SIGTERM there, as a
    # cluster or a Ctrl-C would stop the sweep.
    sweep = ["-m", "data=moons", "data.batch_size=512,32", "trainer.max_epochs=2", MODEL, "trainer.resume=auto",
             "trainer.curves=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    first = TrainProcess(*sweep, folder=tmp_path / "first", pause_at=10)
    first.wait_until_paused()
    first.process.send_signal(signal.SIGTERM)
    first.go_on()
    assert first.wait() == 128 + signal.SIGTERM, first.stderr
    job0, job1 = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    assert json.loads((job1 / "summary.json").read_text())["stop_reason"] == "interrupted"
    finished = {path: path.stat().st_mtime_ns for path in job0.rglob("*") if path.name != "train.log"}

    again = TrainProcess(*sweep, folder=tmp_path / "again")
    assert again.wait() == 0, again.stderr
    log = (tmp_path / "again" / "stdout").read_text()
    assert f"{job0} finished before with this config" in log
    assert {path: path.stat().st_mtime_ns for path in job0.rglob("*") if path.name != "train.log"} == finished
    assert "finished before with this config" in (job0 / "train.log").read_text()  # its log says so, and no more
    assert "0 epochs and 10 steps done" in log  # job 1 resumed where it stopped
    summaries = {job.name: json.loads((job / "summary.json").read_text()) for job in (job0, job1)}
    assert summaries["1"]["steps"] == 44

    report = subprocess.run([str(Path(sys.executable).parent / "train-report"), str(tmp_path / "sweep")],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    ranked = [line.split("|")[1].strip() for line in report.stdout.splitlines() if line.startswith("| ")][1:]
    assert ranked == sorted(summaries, key=lambda job: summaries[job]["best_value"])
    assert f"\n| 1 | 32 | val_loss | {summaries['1']['best_value']:.4f} |" in report.stdout

