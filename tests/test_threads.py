"""trainer.threads: torch's CPU threads fit the CPUs this process may use, and a run says how many it took."""

from __future__ import annotations

import os

import pytest
import torch

from trainer import threads

CPU, CUDA = torch.device("cpu"), torch.device("cuda")

# (CPUs in the affinity mask, SLURM_CPUS_PER_TASK, LOCAL_WORLD_SIZE, trainer.num_threads, device) -> threads
TABLE = [
    (8, None, None, None, CUDA, 8),  # every CPU of the mask when a GPU computes
    (8, None, None, None, CPU, 4),  # half of them when the CPU computes
    (2, None, None, None, CPU, 1),
    (1, None, None, None, CPU, 1),  # never none
    (64, "8", None, None, CUDA, 8),  # a Slurm job's CPUs on a larger node
    (4, "8", None, None, CUDA, 4),  # a mask narrower than the job's CPUs
    (64, "16", "4", None, CUDA, 4),  # torchrun's 4 processes share the job's CPUs
    (64, "16", "4", None, CPU, 2),
    (8, None, "8", None, CPU, 1),
    (8, None, "16", None, CUDA, 1),  # more processes than CPUs: still one thread each
    (8, "", "", None, CUDA, 8),  # empty variables say nothing
    (8, None, None, 3, CPU, 3),  # trainer.num_threads overrides
    (2, "1", "2", 6, CUDA, 6),
]


@pytest.mark.parametrize("mask, slurm_cpus, local_world_size, num_threads, device, expected", TABLE)
def test_threads_fit_the_cpus_this_process_may_use(monkeypatch, mask, slurm_cpus, local_world_size, num_threads,
                                                   device, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(mask)), raising=False)
    for name, value in (("SLURM_CPUS_PER_TASK", slurm_cpus), ("LOCAL_WORLD_SIZE", local_world_size)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert threads.use_fitting_threads(num_threads, device) == expected
    assert torch.get_num_threads() == expected


def test_without_an_affinity_mask_the_machine_s_cpus_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.usable_cpus() == 6


def test_a_run_sets_the_threads_and_logs_the_choice_once(train_in_this_process, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    result = train_in_this_process("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1",
                                   "trainer.curves=false", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "CPU thread" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "2 CPU threads for torch (this process may use 4 CPUs; half of them, for a model on the CPU)"), lines
    assert torch.get_num_threads() == 2


def test_trainer_num_threads_overrides_the_choice_in_a_run(train_in_this_process, tmp_path):
    result = train_in_this_process("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1",
                                   "trainer.curves=false", "trainer.num_threads=3", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 CPU threads for torch (this process may use" in result.stdout + result.stderr
    assert torch.get_num_threads() == 3
