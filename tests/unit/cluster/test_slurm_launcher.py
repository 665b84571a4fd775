"""hydra/launcher=slurm as composed: what the launcher asks of Slurm by default and with the documented GPU
overrides, and ResumeAfterRequeue, the callback that makes every job of the sweep resume. (tests/e2e/test_slurm.py
runs the launcher against stand-ins for Slurm's commands, tests/e2e/test_slurm_cluster.py on a real cluster.)"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from trainer.cluster.slurm_callback import ResumeAfterRequeue
from trainer.config import config_dir


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


LAUNCHER_KEYS = ("partition", "timeout_min", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb")


def test_the_slurm_launcher_config_requeues_timed_out_jobs_and_resumes_them():
    cfg = compose_with_hydra("hydra/launcher=slurm")
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"] == "hydra_plugins.trainer_slurm.launcher.SlurmLauncher"
    # What any node has: no GPU, 2 cores, the partition's default memory.
    assert {key: launcher[key] for key in LAUNCHER_KEYS} == {
        "partition": None, "timeout_min": 240, "gpus_per_node": None, "tasks_per_node": 1, "cpus_per_task": 2,
        "mem_gb": None}
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] > 0
    assert launcher["additional_parameters"] == {"requeue": True}
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    assert cfg.hydra.callbacks.resume_after_requeue._target_ == "trainer.slurm.ResumeAfterRequeue"
    assert "validate" in cfg.hydra.callbacks  # train.yaml's callback is still there


def test_the_documented_gpu_overrides_of_the_slurm_launcher_compose():
    """The GPU partition's command of slurm.yaml's comments and the README."""
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                             "hydra.launcher.tasks_per_node=4", "hydra.launcher.cpus_per_task=8",
                             "hydra.launcher.mem_gb=32")
    assert {key: cfg.hydra.launcher[key] for key in LAUNCHER_KEYS} == {
        "partition": "gpu", "timeout_min": 240, "gpus_per_node": 4, "tasks_per_node": 4, "cpus_per_task": 8,
        "mem_gb": 32}


@pytest.mark.parametrize("given, jobs_get", [
    (["optimizer=sgd,adam"], ["trainer.resume=auto", "optimizer=sgd,adam"]),
    (["trainer.resume=null", "seed=1"], ["trainer.resume=null", "seed=1"]),
    (["++trainer.resume=runs/a/checkpoints/last.pt"], ["++trainer.resume=runs/a/checkpoints/last.pt"]),
], ids=["added", "user-null", "user-path"])
def test_every_job_of_the_sweep_resumes_unless_the_user_said_otherwise(given, jobs_get):
    cfg = compose_with_hydra()
    cfg.hydra.overrides.task = given
    ResumeAfterRequeue().on_multirun_start(config=cfg)
    assert list(cfg.hydra.overrides.task) == jobs_get
