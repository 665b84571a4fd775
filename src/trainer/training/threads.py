"""How many threads torch's ops may use on the CPU (trainer.num_threads), chosen once before the data is built.

torch starts one intra-op thread per core of the machine. When another process holds one of those cores (a laptop,
a shared node, a Slurm job given fewer CPUs than the node has, several torchrun processes per node), every op
that splits its work waits for the thread that is not scheduled. Measured on a 2-core x86_64 CPU (torch 2.14, the
MNIST MLP 784-128-64-10 of scripts/bench.py, Adam, batch 64, one training pass over 54,000 samples): `train`'s pass
took 0.52 s with 1 thread and 0.41-0.43 s with 2 on a quiet machine, but 0.51 s with 1 thread against 1.50 s with
2 while another process spun on one core; the bare loop, 0.47 s against 0.35 s quiet and 0.49 s against 1.5-1.8 s
busy. A thread per core is right on a quiet machine and three times too slow on a busy one; a fixed fraction of
the cores (this module used to take half) is safe when busy and a fifth slower when quiet.

So trainer.num_threads=null counts the CPUs this process may use (usable_cpus), and for a model trained on the
CPU leaves out those that other processes are keeping busy right now: their load on this process's CPUs is read
from /proc/stat over a window of 0.15 s before the data is built, less this process's own CPU time in that window.
A model on a GPU gets every usable CPU, busy or not: the CPU only feeds it. Where /proc/stat cannot be read (macOS,
Windows, a restricted container), every usable CPU, and the log line says why. OMP_NUM_THREADS, where set, is taken
as it is, as torch itself does (torchrun sets it to 1 for each of several processes unless it is set already).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Collection, Optional, Union

import torch

log = logging.getLogger(__name__)

PROC_STAT: Union[str, os.PathLike, Callable[[], str]] = "/proc/stat"
"""Where the CPUs' times come from: Linux's per-CPU counters, in clock ticks since boot."""
WINDOW = 0.15
"""Seconds: the window the load is measured over, once, as the run starts. /proc/stat counts in ticks of 1/100 s
on most kernels: 15 ticks per CPU in 0.15 s, enough to tell a busy CPU from an idle one."""


def local_processes() -> int:
    """torchrun's processes on this node (LOCAL_WORLD_SIZE); 1 without torchrun."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _mask() -> set[int]:
    """The CPUs the OS lets this process run on (taskset, cgroups' cpusets, Slurm's task binding); all the
    machine's cores where the OS has no mask."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _job_cpus(mask: Collection[int]) -> int:
    """The CPUs of the mask, no more than the job's SLURM_CPUS_PER_TASK."""
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(len(mask), int(slurm_cpus)) if slurm_cpus.isdigit() and int(slurm_cpus) > 0 else len(mask)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what taskset, cgroups' cpusets and Slurm's task
    binding leave it; all the machine's cores where the OS has no mask), no more than the job's
    SLURM_CPUS_PER_TASK, shared among torchrun's processes on this node (LOCAL_WORLD_SIZE); at least 1."""
    return max(1, _job_cpus(_mask()) // local_processes())


def read_cpu_ticks(stat: Union[str, os.PathLike, Callable[[], str]]) -> Optional[dict[int, tuple[int, int]]]:
    """Each CPU's (busy, all) clock ticks since boot from the `cpuN` lines of /proc/stat (`stat`: its path, or a
    callable that returns its text); None where it cannot be read (macOS, Windows, a restricted container) or
    has no such lines. Busy: user, nice, system, irq, softirq and steal (time a hypervisor gave to another
    machine); the rest is idle and iowait. guest and guest_nice are already part of user and nice."""
    try:
        if callable(stat):
            text = stat()
        else:
            with open(stat) as file:
                text = file.read()
        ticks = {}
        for line in text.splitlines():
            name, *fields = line.split() or [""]
            if name.startswith("cpu") and name[3:].isdigit():
                user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in (fields + ["0"] * 8)[:8])
                busy = user + nice + system + irq + softirq + steal
                ticks[int(name[3:])] = (busy, busy + idle + iowait)
    except (OSError, ValueError):
        return None
    return ticks or None


@dataclass(frozen=True)
class CpuSample:
    """The CPUs' ticks (None: unreadable), this process's own CPU seconds (all its threads) and the time, at
    one moment."""

    ticks: Optional[dict[int, tuple[int, int]]]
    own_seconds: float
    at: float


def take_sample(stat: Union[str, os.PathLike, Callable[[], str], None] = None,
                clock: Callable[[], float] = time.monotonic,
                cpu_time: Callable[[], float] = time.process_time) -> CpuSample:
    """One sample of the CPUs' ticks from `stat` (PROC_STAT when None), this process's CPU time and the clock."""
    return CpuSample(read_cpu_ticks(PROC_STAT if stat is None else stat), cpu_time(), clock())


def busy_with_others(first: CpuSample, second: CpuSample, cpus: Collection[int]) -> Optional[float]:
    """How many of `cpus` other processes kept busy between two samples, on average: the busy share of each
    of those CPUs (from its ticks) summed, less this process's own CPU time over the wall time between the
    samples; at least 0. None when the ticks are unreadable or name none of `cpus`."""
    if first.ticks is None or second.ticks is None:
        return None
    counted = [cpu for cpu in cpus if cpu in first.ticks and cpu in second.ticks]
    if not counted:
        return None
    busy = 0.0
    for cpu in counted:
        busy_ticks = second.ticks[cpu][0] - first.ticks[cpu][0]
        all_ticks = second.ticks[cpu][1] - first.ticks[cpu][1]
        if all_ticks > 0:
            busy += min(1.0, max(0.0, busy_ticks / all_ticks))
    seconds = second.at - first.at
    own = (second.own_seconds - first.own_seconds) / seconds if seconds > 0 else 0.0
    return max(0.0, busy - own)


def busy_now(cpus: Collection[int]) -> Optional[float]:
    """How many of `cpus` other processes are keeping busy now (busy_with_others over a window of WINDOW
    seconds, this process asleep in it; under torchrun, the processes of the node measure side by side, just
    after the process group's rendezvous). None where /proc/stat is unreadable."""
    first = take_sample()
    if first.ticks is None:
        return None
    time.sleep(WINDOW)
    return busy_with_others(first, take_sample(), cpus)


def _fitting(cpus: int, device: torch.device) -> tuple[int, str]:
    """fitting_threads' count, and why, for the log."""
    if device.type != "cpu":
        return cpus, f"a model on {device.type}"
    mask = _mask()
    busy = busy_now(mask)
    if busy is None:
        return cpus, "all of them: the load of other processes is unknown, /proc/stat is unreadable"
    busy_count = int(busy + 0.5)  # (rounded half up)
    idle = max(0, min(_job_cpus(mask), len(mask) - busy_count))
    processes = local_processes()
    threads = max(1, min(cpus, idle // processes))
    said = str(busy_count) if busy_count else "none"
    if processes == 1:
        return threads, f"{said} busy with other processes"
    return threads, (f"{said} of the {len(mask)} of its mask busy with other processes, "
                     f"the idle ones shared among {processes} processes on this node")


def fitting_threads(cpus: int, device: torch.device) -> int:
    """Threads for a process that may use `cpus` CPUs (usable_cpus()): all of them when the model computes on a
    GPU (the CPU only feeds it); for a model on the CPU, the CPUs of its mask (at most SLURM_CPUS_PER_TASK) that
    other processes are not keeping busy now (busy_now, rounded half up), shared among torchrun's processes on
    the node, at most `cpus`, at least 1. All of `cpus` where the load cannot be measured (no /proc/stat).

    On the 2-core machine of the measurements above this takes 2 threads when nothing else runs and 1 while
    another process spins on a core: the faster count in both cases."""
    return _fitting(cpus, device)[0]


def use_fitting_threads(num_threads: Optional[int], device: torch.device) -> int:
    """Set torch's intra-op threads: trainer.num_threads when given, else OMP_NUM_THREADS when set, else the count
    that fits this process's CPUs (fitting_threads); log the choice in one line. Returns the count."""
    cpus = usable_cpus()
    omp_threads = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()  # "4,2": 4, then 2 in nested regions
    if num_threads is not None:
        threads, source = num_threads, "trainer.num_threads"
    elif omp_threads.isdigit() and int(omp_threads) > 0:
        threads, source = int(omp_threads), "OMP_NUM_THREADS"
    else:
        threads, source = _fitting(cpus, device)
    torch.set_num_threads(threads)
    log.info("%d CPU thread%s for torch (this process may use %d CPU%s; %s)", threads, "s" * (threads != 1),
             cpus, "s" * (cpus != 1), source)
    return threads
