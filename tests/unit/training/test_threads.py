"""trainer.threads: torch's CPU threads fit the CPUs this process may use and other processes leave idle, and a run
says how many it took and why."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from trainer.training import threads

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def no_omp_num_threads(monkeypatch):
    """The suite sets OMP_NUM_THREADS=1 for its `train` processes (conftest); these tests choose without it."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def set_environment(monkeypatch, mask, slurm_cpus=None, local_world_size=None):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(mask)), raising=False)
    for name, value in (("SLURM_CPUS_PER_TASK", slurm_cpus), ("LOCAL_WORLD_SIZE", local_world_size)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def cpu_line(cpu, user=0, system=0, idle=0, iowait=0, steal=0):
    """One `cpuN` line of /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice."""
    return f"cpu{cpu} {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0"


def proc_stat(*lines):
    """/proc/stat's text: the machine-wide `cpu` line (which must not count), the given cpuN lines, and others."""
    return "\n".join(["cpu  999999 0 999999 0 0 0 0 0 0 0", *lines, "intr 12345 0 0", "ctxt 678", "btime 1700000000"])


def snapshots(*texts):
    """A stand-in for /proc/stat that reads as each text in turn, and as the last one from then on."""
    remaining = list(texts)
    return lambda: remaining.pop(0) if len(remaining) > 1 else remaining[0]


QUIET = proc_stat(cpu_line(0, idle=1000), cpu_line(1, idle=1000))
# (the second snapshot's cpuN lines, this process's CPU seconds, the wall seconds, affinity mask) -> busy CPUs of
# others; the first snapshot is QUIET, and every CPU counts 100 ticks a second
MEASURE = [
    ((cpu_line(0, idle=1100), cpu_line(1, idle=1100)), 0.0, 1.0, {0, 1}, 0.0),  # quiet
    ((cpu_line(0, idle=1100), cpu_line(1, user=100, idle=1000)), 0.0, 1.0, {0, 1}, 1.0),  # one core busy
    ((cpu_line(0, user=50, idle=1050), cpu_line(1, user=20, system=30, idle=1050)), 0.0, 1.0, {0, 1}, 1.0),
    # steal (a hypervisor's other machines) is busy, iowait idle
    ((cpu_line(0, steal=100, idle=1000), cpu_line(1, iowait=100, idle=1000)), 0.0, 1.0, {0, 1}, 1.0),
    ((cpu_line(0, user=100, idle=1000), cpu_line(1, idle=1100)), 1.0, 1.0, {0, 1}, 0.0),  # all of it this process's
    ((cpu_line(0, user=100, idle=1000), cpu_line(1, user=100, idle=1000)), 0.5, 0.5, {0, 1}, 1.0),  # own CPU: 1 of 2
    ((cpu_line(0, user=100, idle=1000), cpu_line(1, idle=1100)), 1.5, 1.0, {0, 1}, 0.0),  # never below 0
    ((cpu_line(0, idle=1100), cpu_line(1, user=100, idle=1000)), 0.0, 1.0, {0}, 0.0),  # cpu1 is not this process's
    ((cpu_line(0, idle=1100), cpu_line(1, user=100, idle=1000)), 0.0, 1.0, {1, 7}, 1.0),  # cpu7 has no line
]


@pytest.mark.parametrize("second, own_seconds, wall_seconds, mask, expected", MEASURE)
def test_the_load_of_other_processes_is_measured_on_this_process_s_cpus(second, own_seconds, wall_seconds, mask,
                                                                        expected):
    stat = snapshots(QUIET, proc_stat(*second))
    clock, cpu_time = iter([10.0, 10.0 + wall_seconds]), iter([3.0, 3.0 + own_seconds])
    first = threads.take_sample(stat, clock=lambda: next(clock), cpu_time=lambda: next(cpu_time))
    later = threads.take_sample(stat, clock=lambda: next(clock), cpu_time=lambda: next(cpu_time))
    assert threads.busy_with_others(first, later, mask) == pytest.approx(expected)


@pytest.mark.parametrize("text", [None, "", "cpu  1 2 3 4 5 6 7 8 9 10\nintr 1\n", "cpu0 1 2 three 4 5 6 7 8\n"])
def test_an_unreadable_proc_stat_says_nothing_of_the_load(tmp_path, text):
    path = tmp_path / "stat"
    if text is not None:
        path.write_text(text)
    first, second = threads.take_sample(path), threads.take_sample(path)
    assert first.ticks is None and threads.busy_with_others(first, second, {0, 1}) is None


def test_proc_stat_is_read_from_a_path_or_a_callable(tmp_path):
    text = proc_stat(cpu_line(0, user=7, system=3, idle=90, iowait=5, steal=1), cpu_line(1, idle=100))
    (tmp_path / "stat").write_text(text)
    expected = {0: (11, 106), 1: (0, 100)}
    assert threads.read_cpu_ticks(tmp_path / "stat") == threads.read_cpu_ticks(lambda: text) == expected


# (CPUs in the affinity mask, SLURM_CPUS_PER_TASK, LOCAL_WORLD_SIZE, trainer.num_threads, device, CPUs measured busy
# with other processes (None: /proc/stat unreadable)) -> threads
TABLE = [
    (8, None, None, None, CUDA, 3.0, 8),  # every CPU of the mask when a GPU computes, busy or not
    (2, None, None, None, CPU, 0.0, 2),  # a quiet machine: every CPU
    (2, None, None, None, CPU, 1.0, 1),  # one core busy: the other one
    (2, None, None, None, CPU, 0.4, 2),  # rounded: 0
    (2, None, None, None, CPU, 0.5, 1),  # rounded half up: 1
    (2, None, None, None, CPU, 1.9, 1),  # never none
    (1, None, None, None, CPU, 0.0, 1),
    (8, None, None, None, CPU, 2.6, 5),
    (2, None, None, None, CPU, None, 2),  # the load unknown: every CPU
    (64, "8", None, None, CUDA, 0.0, 8),  # a Slurm job's CPUs on a larger node
    (64, "8", None, None, CPU, 0.0, 8),
    (64, "8", None, None, CPU, 60.0, 4),  # 4 of the mask's CPUs idle
    (4, "8", None, None, CUDA, 0.0, 4),  # a mask narrower than the job's CPUs
    (64, "16", "4", None, CUDA, 0.0, 4),  # torchrun's 4 processes share the job's CPUs
    (16, None, "4", None, CPU, 0.0, 4),  # ... and the idle ones
    (16, None, "4", None, CPU, 5.0, 2),
    (16, None, "4", None, CPU, 14.0, 1),
    (8, None, "8", None, CPU, 0.0, 1),
    (8, None, "16", None, CUDA, 0.0, 1),  # more processes than CPUs: still one thread each
    (8, "", "", None, CPU, 0.0, 8),  # empty variables say nothing
    (8, None, None, 3, CPU, 0.0, 3),  # trainer.num_threads overrides
    (8, None, None, 3, CPU, 7.0, 3),
    (2, "1", "2", 6, CUDA, 0.0, 6),
]


@pytest.mark.parametrize("mask, slurm_cpus, local_world_size, num_threads, device, busy, expected", TABLE)
def test_threads_fit_the_cpus_this_process_may_use_and_others_leave_idle(monkeypatch, mask, slurm_cpus,
                                                                          local_world_size, num_threads, device,
                                                                          busy, expected):
    set_environment(monkeypatch, mask, slurm_cpus, local_world_size)
    measured = []
    monkeypatch.setattr(threads, "busy_now", lambda cpus: measured.append(set(cpus)) or busy)
    assert threads.use_fitting_threads(num_threads, device) == expected
    assert torch.get_num_threads() == expected
    # The load is measured over the whole mask, and only where it decides: never for a GPU or trainer.num_threads.
    assert measured == ([set(range(mask))] if device == CPU and num_threads is None else [])


# (CPUs in the affinity mask, LOCAL_WORLD_SIZE, busy CPUs, device, trainer.num_threads) -> the log line's end
LOG_LINES = [
    (2, None, 1.0, CPU, None, "1 CPU thread for torch (this process may use 2 CPUs; 1 busy with other processes)"),
    (2, None, 0.1, CPU, None, "2 CPU threads for torch (this process may use 2 CPUs; none busy with other processes)"),
    (2, None, None, CPU, None, "2 CPU threads for torch (this process may use 2 CPUs; all of them: the load of other "
                               "processes is unknown, /proc/stat is unreadable)"),
    (16, "4", 5.0, CPU, None, "2 CPU threads for torch (this process may use 4 CPUs; 5 of the 16 of its mask busy "
                              "with other processes, the idle ones shared among 4 processes on this node)"),
    (4, None, 1.0, CUDA, None, "4 CPU threads for torch (this process may use 4 CPUs; a model on cuda)"),
    (1, None, 0.0, CPU, 2, "2 CPU threads for torch (this process may use 1 CPU; trainer.num_threads)"),
]


@pytest.mark.parametrize("mask, local_world_size, busy, device, num_threads, expected", LOG_LINES)
def test_the_choice_is_logged_in_one_line_with_its_reason(monkeypatch, caplog, mask, local_world_size, busy, device,
                                                           num_threads, expected):
    set_environment(monkeypatch, mask, local_world_size=local_world_size)
    monkeypatch.setattr(threads, "busy_now", lambda cpus: busy)
    caplog.set_level(logging.INFO, logger="trainer.training.threads")
    threads.use_fitting_threads(num_threads, device)
    assert [r.getMessage() for r in caplog.records if r.name == "trainer.training.threads"] == [expected]


def test_the_load_is_measured_over_one_window_while_this_process_sleeps(monkeypatch):
    monkeypatch.setattr(threads, "PROC_STAT", snapshots(
        QUIET, proc_stat(cpu_line(0, idle=1100), cpu_line(1, user=100, idle=1000))))  # cpu1 busy: 1 CPU
    start = time.monotonic()
    assert threads.busy_now({0, 1}) == pytest.approx(1.0, abs=0.3)  # (less this process's CPU time, near 0 asleep)
    assert time.monotonic() - start >= threads.WINDOW


@pytest.mark.parametrize("omp_num_threads", ["3", " 3", "3 ", "3,2"])
def test_omp_num_threads_is_taken_as_it_is(monkeypatch, caplog, omp_num_threads):
    set_environment(monkeypatch, 4)
    monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    monkeypatch.setattr(threads, "busy_now", lambda cpus: pytest.fail("measured despite OMP_NUM_THREADS"))
    with caplog.at_level(logging.INFO, logger="trainer.training.threads"):
        assert threads.use_fitting_threads(None, CPU) == 3
    assert caplog.messages == ["3 CPU threads for torch (this process may use 4 CPUs; OMP_NUM_THREADS)"]


def test_without_proc_stat_every_usable_cpu_counts(monkeypatch, tmp_path):
    set_environment(monkeypatch, 2)
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "no such file")
    assert threads.busy_now({0, 1}) is None
    assert threads.use_fitting_threads(None, CPU) == 2


def test_without_an_affinity_mask_the_machine_s_cpus_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.usable_cpus() == 6


def test_a_process_spinning_on_one_cpu_is_measured_busy(monkeypatch):
    """The real thing: /proc/stat, this process's own CPU time, and a process that keeps one of its CPUs busy."""
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if len(mask) < 2 or threads.read_cpu_ticks(threads.PROC_STAT) is None:
        pytest.skip("needs /proc/stat and at least 2 CPUs this process may use")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(spinner.pid, {max(mask)})
        time.sleep(0.2)
        first = threads.take_sample()
        time.sleep(0.5)
        busy = threads.busy_with_others(first, threads.take_sample(), mask)
        assert busy is not None and busy >= 0.5, busy
        assert threads.use_fitting_threads(None, CPU) <= len(mask) - 1
        assert spinner.poll() is None  # it spun all along
    finally:
        spinner.kill()
        spinner.wait()


def test_a_run_sets_the_threads_and_logs_the_choice_once(train_in_this_process, tmp_path, monkeypatch):
    set_environment(monkeypatch, 4)
    monkeypatch.setattr(threads, "PROC_STAT", snapshots(
        proc_stat(*(cpu_line(cpu, idle=1000) for cpu in range(4))),
        proc_stat(*(cpu_line(cpu, idle=1015) for cpu in (0, 1, 3)), cpu_line(2, user=15, idle=1000))))
    result = train_in_this_process("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1",
                                   "trainer.curves=false", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "CPU thread" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "3 CPU threads for torch (this process may use 4 CPUs; 1 busy with other processes)"), lines
    assert torch.get_num_threads() == 3


def test_trainer_num_threads_overrides_the_choice_in_a_run(train_in_this_process, tmp_path):
    result = train_in_this_process("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1",
                                   "trainer.curves=false", "trainer.num_threads=3", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 CPU threads for torch (this process may use" in result.stdout + result.stderr
    assert torch.get_num_threads() == 3
