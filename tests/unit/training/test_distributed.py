"""Where a process is: torchrun's and srun's variables read as its rank, the world's size and its local rank.
(tests/e2e/test_distributed_runs.py runs many processes.)"""

from __future__ import annotations

import pytest

from trainer.training.distributed import Processes, from_environment


@pytest.mark.parametrize("env, expected", [
    ({}, Processes()),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Processes(3, 4, 1)),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, Processes()),  # a job step of one task: a lone process
    ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_STEP_NODELIST": "gpu07",
      "SLURM_JOB_ID": "1234567"}, Processes(5, 8, 1)),
], ids=["alone", "torchrun", "srun-one-task", "srun-eight-tasks"])
def test_from_environment_reads_torchrun_and_srun(monkeypatch, env, expected):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "SLURM_STEP_NODELIST", "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert from_environment() == expected
    if expected.distributed and "SLURM_PROCID" in env:
        import os

        assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu07", "24567")  # 20000 + the job id modulo 10000

