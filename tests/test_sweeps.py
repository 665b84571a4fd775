"""Sweeps: one started again carries on where it stopped; `hparams_search=optuna`'s search space names real
settings with values they accept, and a tiny search runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import DictConfig, OmegaConf

from pausing_model import MODEL, TrainProcess
from helpers.commands import assert_succeeded, train
from trainer.config import RULES, config_dir
from trainer.vocabulary import METRICS_MAXIMISED

PARSER = OverridesParser.create()


def compose_search(*overrides: str) -> DictConfig:
    """The config of `train hparams_search=optuna OVERRIDES...`, with the hydra node that holds the sweeper."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=["hparams_search=optuna", *overrides], return_hydra_config=True)


def search_space(cfg: DictConfig) -> dict[str, IntervalSweep | list[Any]]:
    """Each searched key with its interval, or its list of options, as Hydra's override grammar reads them."""
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return {override.get_key_element(): override.value() if override.is_interval_sweep()
            else list(override.sweep_iterator()) for override in PARSER.parse_overrides(params)}


def in_space(value: Any, allowed: IntervalSweep | list[Any]) -> bool:
    if isinstance(allowed, IntervalSweep):
        return allowed.start <= value <= allowed.end
    return value in allowed


def test_every_searched_key_is_a_setting_and_every_searched_value_passes_its_rule():
    cfg = compose_search()
    space = search_space(cfg)

    assert set(space) == {"optimizer.lr", "data.batch_size", "model.hidden_sizes", "model.dropout"}
    for key, allowed in space.items():
        parent, _, leaf = key.rpartition(".")
        assert leaf in OmegaConf.select(cfg, parent), f"{key} is searched but not a setting of the composed config"
        values = [allowed.start, allowed.end] if isinstance(allowed, IntervalSweep) else allowed
        assert all(RULES[key].accepts(value) for value in values), (key, values, RULES[key].allowed)
    assert cfg.model._target_ == "trainer.models.MLP"
    assert cfg.hydra.mode.name == "MULTIRUN"  # so that `-m` is optional
    # The objective is the best value of the monitored metric: the default one is minimised.
    assert cfg.trainer.early_stopping.monitor not in METRICS_MAXIMISED
    assert cfg.hydra.sweeper.direction == "minimize"


def test_a_model_on_the_command_line_replaces_the_searchs_model():
    assert compose_search("model=dropout_net").model._target_ == "trainer.models.DropoutNet"


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


def test_runs_and_sweeps_started_in_the_same_second_get_directories_of_their_own():
    def directories() -> tuple[str, str]:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
        return str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)  # ${now:...} resolved, as Hydra resolves it

    first, second = directories(), directories()  # a few milliseconds apart
    assert first[0] != second[0] and first[1] != second[1]
