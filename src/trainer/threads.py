"""How many threads torch's ops may use on the CPU (trainer.num_threads), chosen once before the data is built.

torch starts one intra-op thread per core of the machine. When another process holds one of those cores (a laptop,
a shared node, a Slurm job given fewer CPUs than the node has, several torchrun processes per node), every op
that splits its work waits for the thread that is not scheduled: on a 2-core machine with one core spinning, the
MNIST MLP's training pass took 3-5 times as long with 2 threads as with 1. So `auto` counts only the CPUs this
process may use, shares them between the processes of the node, and for a model trained on the CPU takes half.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch

log = logging.getLogger(__name__)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (what taskset, cgroups' cpusets and Slurm's task
    binding leave it; all the machine's cores where the OS has no mask), no more than the job's
    SLURM_CPUS_PER_TASK, shared among torchrun's processes on this node (LOCAL_WORLD_SIZE); at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm_cpus, local_processes = os.environ.get("SLURM_CPUS_PER_TASK", ""), os.environ.get("LOCAL_WORLD_SIZE", "")
    if slurm_cpus.isdigit() and int(slurm_cpus) > 0:
        cpus = min(cpus, int(slurm_cpus))
    if local_processes.isdigit() and int(local_processes) > 0:
        cpus //= int(local_processes)
    return max(1, cpus)


def fitting_threads(cpus: int, device: torch.device) -> int:
    """Threads for `cpus` usable CPUs: all of them when the model computes on a GPU (the CPU only feeds it); half,
    at least one, when it computes on the CPU.

    Why half: the models this trainer is mostly run with on a CPU are small, and for them a second thread buys
    little and costs much as soon as another process wants a core. Measured on a 2-core x86_64 CPU (torch 2.14,
    the MNIST MLP 784-128-64-10 of scripts/bench.py, Adam, batch 64, one training pass over 54,000 samples):
    `train`'s pass took 0.52 s with 1 thread and 0.43 s with 2 on a quiet machine, and 0.51 s with 1 thread
    against 1.50 s with 2 while another process spun on one core; the bare loop, 0.47 s against 0.35 s quiet and
    0.49 s against 1.5-1.8 s busy. So a fifth slower when nothing else runs, three times faster when something
    does. One thread per two CPUs leaves room for other processes on up to half the cores before any thread
    waits. A large model on a quiet many-core machine may want them all: trainer.num_threads says so."""
    return cpus if device.type != "cpu" else max(1, cpus // 2)


def use_fitting_threads(num_threads: Optional[int], device: torch.device) -> int:
    """Set torch's intra-op threads: trainer.num_threads when given, else the count that fits this process's
    CPUs; log the choice in one line. Returns the count."""
    cpus = usable_cpus()
    if num_threads is not None:
        threads, source = num_threads, "trainer.num_threads"
    else:
        threads = fitting_threads(cpus, device)
        source = "half of them, for a model on the CPU" if device.type == "cpu" else f"a model on {device.type}"
    torch.set_num_threads(threads)
    log.info("%d CPU thread%s for torch (this process may use %d CPU%s; %s)", threads, "s" * (threads != 1),
             cpus, "s" * (cpus != 1), source)
    return threads
