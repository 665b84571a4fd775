"""Many processes, one model: torch.distributed under torchrun (or srun).

torchrun starts one process per device and tells each its place in RANK, WORLD_SIZE and LOCAL_RANK; srun with
several tasks says the same in SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID. Every process builds the same
run; DistributedDataParallel averages the gradients across them at each step, each takes its share of every
batch, metrics are gathered so that every process reaches the same decisions, and only rank 0 prints and writes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes of one run."""

    rank: int = 0
    """0 for the process that prints, logs and writes files."""
    world_size: int = 1
    local_rank: int = 0
    """The rank among the processes of this machine: the index of its GPU."""

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Processes:
    """Where torchrun or srun placed this process; a lone process when neither did."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (and anything else that speaks its env:// protocol)
        return Processes(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_STEP_NUM_TASKS", 1)) > 1:  # srun --ntasks=N train ...: one task per device
        env.setdefault("MASTER_ADDR", _first_host(env["SLURM_STEP_NODELIST"]))
        env.setdefault("MASTER_PORT", str(_port_of_job(env.get("SLURM_JOB_ID", ""))))
        return Processes(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env["SLURM_LOCALID"]))
    return Processes()


def _port_of_job(job_id: str) -> int:
    """The rendezvous port of a Slurm job's processes: one of 20000-29999 chosen by the job id, so that two jobs
    sharing a node do not meet on one port (29500 for a job id Slurm did not give)."""
    return 20000 + int(job_id) % 10000 if job_id.isdigit() else 29500


def _first_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as gpu[01-04],gpu07 (scontrol expands the ranges)."""
    if "[" not in nodelist or shutil.which("scontrol") is None:
        return nodelist.split(",")[0]
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return hosts.stdout.split()[0]


_started_here = False
"""Whether start() made this process's process group (a host program may have one of its own)."""


def start(processes: Processes) -> None:
    """Join the run's process group, once: gloo carries CPU tensors, nccl (when there is CUDA) GPU tensors."""
    global _started_here
    if processes.distributed and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, rank=processes.rank, world_size=processes.world_size)
        atexit.register(dist.destroy_process_group)
        _started_here = True


def same_on_every_rank(value: Any) -> Any:
    """Rank 0's value, on every process (e.g. a run directory whose name holds the time)."""
    if not dist.is_initialized():
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over all processes (in place)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every process when it is true on one: so that all stop at the same step, or none does."""
    return bool(max_over_ranks(int(flag), device))


def max_over_ranks(number: int, device: torch.device) -> int:
    """The largest of the processes' numbers, on every process."""
    if not dist.is_initialized():
        return number
    largest = torch.tensor([number], device=device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest.item())


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `tensor` (N_rank, ...) joined along the first dimension, in rank order; the shares may
    differ in length by a few samples, so they are padded for the exchange and trimmed after."""
    if not dist.is_initialized():
        return tensor
    lengths = [torch.zeros((), dtype=torch.int64, device=tensor.device) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, torch.tensor(len(tensor), device=tensor.device))
    longest = int(max(lengths))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    shares = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(shares, padded)
    return torch.cat([share[:int(length)] for share, length in zip(shares, lengths)])


def joined() -> bool:
    """Whether this process joined a run's process group: start() made it, not a program that runs train in it."""
    return _started_here and dist.is_initialized()


def end_process(code: int) -> NoReturn:
    """End this process of a distributed run: its exit handlers run (the process group is destroyed, train.log is
    flushed and closed), its streams are flushed, then it exits without Python's teardown of the interpreter.
    gloo's worker threads release the Python objects of their last collectives when they get to it; one that gets
    to it while the interpreter is being torn down is killed inside a C++ destructor, and the process aborts
    ("terminate called without an active exception", exit 134; pytorch/pytorch#190489). One run's process in a
    hundred or so did, at the end of a run that had finished and written everything."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def wait_for_every_rank() -> None:
    """A barrier: e.g. rank 0 has written best.pt before the others read it; or at the end of a run, so that no
    process tears its connections down while another may still be sending on them."""
    if dist.is_initialized():
        dist.barrier()

