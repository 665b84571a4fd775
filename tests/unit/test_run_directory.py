"""The run directory's lock (trainer.run_directory.lock): a process that only looks at it keeps no run from taking
it, and a lock left by a killed process, or kept open by its forked workers, is taken over. Other processes hold or
look at the lock. (tests/e2e/test_run_directory_ownership.py: `train` keeping a run directory's one owner.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from trainer.config import ConfigError
from trainer.run_directory import LOCK_NAME, lock


LOOK_AT_THE_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    descriptor = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_SH)  # as ValidateBeforeRun's look does, for an instant
    print("locked", flush=True)
    time.sleep(0.05)
""")


def test_a_process_that_only_looks_at_the_lock_does_not_keep_a_run_from_taking_it(tmp_path):
    (tmp_path / LOCK_NAME).touch()
    looking = subprocess.Popen([sys.executable, "-c", LOOK_AT_THE_LOCK, str(tmp_path / LOCK_NAME)],
                               stdout=subprocess.PIPE, text=True)
    assert looking.stdout.readline() == "locked\n"
    lock(tmp_path, "hydra.run.dir").release()  # while the other looks
    assert looking.wait() == 0


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, lock_holder):
    holder = lock_holder(tmp_path)
    with pytest.raises(ConfigError, match=rf"\(train pid {holder.pid} holds it: "):
        lock(tmp_path, "hydra.run.dir")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_NAME).read_text() == f"{holder.pid}\n"  # left behind

    taken = lock(tmp_path, "hydra.run.dir")
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    taken.release()
    assert list(tmp_path.iterdir()) == []


HOLD_THE_LOCK_WITH_A_FORKED_WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from trainer.run_directory import lock
    lock(Path(sys.argv[1]), "hydra.run.dir")
    worker = os.fork()  # as DataLoader forks its workers
    if worker == 0:
        time.sleep(600)
        os._exit(0)
    print(worker, flush=True)
    time.sleep(600)
""")


def test_a_killed_run_s_forked_workers_do_not_keep_its_lock(tmp_path):
    """A DataLoader worker outlives its killed parent for a while: the lock must be free the moment the parent dies,
    not when the worker notices, or a resume started at once would be refused naming a dead process."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK_WITH_A_FORKED_WORKER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    worker = int(holder.stdout.readline())
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        lock(tmp_path, "hydra.run.dir").release()  # while the worker still runs
    finally:
        os.kill(worker, signal.SIGKILL)

