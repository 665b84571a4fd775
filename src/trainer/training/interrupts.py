"""Stopping on a signal without losing work, and asking Slurm to run the job again.

SIGTERM (a kill, scancel, a preemption), SIGUSR1 and SIGUSR2 (what `sbatch --signal` sends before a time limit)
and the first Ctrl-C only ask the engine to stop: it finishes the step it is in, saves last.pt and ends the run
with stop_reason interrupted. A second Ctrl-C stops at once.

A host that runs `train` inside its own process may have installed handlers of its own before ours: submitit
(hydra/launcher=slurm) answers SIGUSR2 by checkpointing its job, requeueing it and exiting. Once the run is
saved, each signal received goes on to such a handler, so the host does what it would have done without us.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from types import FrameType
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
                     if hasattr(signal, name))  # Windows has no SIGUSR1 or SIGUSR2
REQUEUE_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2") if hasattr(signal, name))
"""The signals that trainer.requeue answers with a requeue: those `sbatch --signal` sends ahead of the time limit.
SIGTERM is also what scancel sends, and a cancelled job must stay cancelled: it is answered with a requeue only
when Slurm is preempting the job (see slurm_job_preempted)."""
SCONTROL_TIMEOUT_S = 10
"""How long `scontrol show job` may take to say whether the job is preempted: a preemption's grace time is
running meanwhile."""


class Interrupted(Exception):
    """The run stopped on a signal after saving last.pt; the command exits with 128 + the signal's number."""

    def __init__(self, received: signal.Signals):
        self.signal = received
        super().__init__(f"interrupted by {received.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal.value


class StopRequests:
    """While entered, turns the stop signals into a request the training loop reads between steps."""

    def __init__(self) -> None:
        self.received: Optional[signal.Signals] = None
        """The first stop signal received, if any."""
        self._arrived: list[signal.Signals] = []
        """Every stop signal received, each once, in order of arrival."""
        self._previous: dict[signal.Signals, Any] = {}
        self._host_handlers: dict[signal.Signals, Callable[[int, Optional[FrameType]], Any]] = {}
        """The Python handlers that ours displaced: a host's, such as submitit's. Kept after exit, to hand on to."""

    def __enter__(self) -> StopRequests:
        # Python runs signal handlers in the main thread only; elsewhere (a launcher's worker thread) the
        # signals keep their usual effect.
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._request_stop) for number in STOP_SIGNALS}
            self._host_handlers = {number: handler for number, handler in self._previous.items()
                                   if _is_host_handler(handler)}
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    @property
    def host_requeues(self) -> bool:
        """Whether a host (submitit) handles a signal sent ahead of a time limit: it then requeues the job."""
        return any(number in self._host_handlers for number in REQUEUE_SIGNALS)

    def hand_on_to_host(self, preempted: bool = False) -> bool:
        """Call, in order of arrival, the host's handler of each stop signal received, as the signal would have
        had it without us; meant for once last.pt and the summary are written. submitit's SIGUSR2 handler
        checkpoints the job, requeues it and exits here; its SIGTERM handler only logs. So when Slurm is preempting
        the job (`preempted`: its SIGTERM starts a grace time), the SIGTERM goes to the host's handler of the
        time-limit signal instead, which tells a preemption from a time-out itself and requeues either. True when
        the signal that stopped the run went to a host, which then decides about requeueing."""
        host_requeue = next((number for number in REQUEUE_SIGNALS if number in self._host_handlers), None)
        handed = [host_requeue if number is signal.SIGTERM and preempted and host_requeue else number
                  for number in self._arrived]
        for number in dict.fromkeys(handed):  # (each once, in order)
            handler = self._host_handlers.get(number)
            if handler is not None:
                log.info("%s goes on to %s, the handler that was there before ours", number.name,
                         _describe(handler))
                handler(number.value, None)
        return self.received in self._host_handlers

    def _request_stop(self, number: int, frame: Optional[FrameType]) -> None:
        received = signal.Signals(number)
        if received is signal.SIGINT and self.received is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the step
        if received not in self._arrived:
            self._arrived.append(received)
        if self.received is None:
            self.received = received
            log.warning("%s: finishing this step, then saving last.pt and stopping (Ctrl-C again stops at once)",
                        received.name)


def _is_host_handler(handler: Any) -> bool:
    """A Python function some host installed; not SIG_DFL or SIG_IGN, and not Python's own Ctrl-C handler, which
    would raise KeyboardInterrupt after the save."""
    return callable(handler) and handler is not signal.default_int_handler


def _describe(handler: Callable[..., Any]) -> str:
    """submitit.core.job_environment.SignalHandler.checkpoint_and_try_requeue, for the log."""
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', type(handler).__name__)}"


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's init function: the stop signals are for the main process, which finishes its step,
    saves and then shuts the workers down; a worker they killed would take the run down with it."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def slurm_job_preempted() -> bool:
    """Whether Slurm is preempting this job. A preemption with a grace time (PreemptMode=REQUEUE, GraceTime) sends
    the job's steps SIGTERM at once and counts on the job to end itself, which it does once saved, and a job that
    ends itself is not requeued by Slurm (it is marked FAILED): the requeue is ours to ask for. scancel sends
    SIGTERM too; what tells them apart is the job's PreemptTime in `scontrol show job`, a date during the grace
    time and None otherwise. One bounded call; any failure counts as no preemption (a cancelled job must stay
    cancelled), said in one line."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None:
        return False
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("SIGTERM: scontrol is not on PATH, so whether Slurm is preempting job %s is unknown: taken for "
                    "a scancel, not requeued", job_id)
        return False
    try:
        result = subprocess.run([scontrol, "show", "job", job_id], capture_output=True, text=True,
                                timeout=SCONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        failure = f"it did not answer within {SCONTROL_TIMEOUT_S} s"
    except OSError as error:  # (not executable, say)
        failure = str(error)
    else:
        preempt_time = re.search(r"\bPreemptTime=(\S+)", result.stdout)
        if result.returncode == 0 and preempt_time is not None:
            if preempt_time.group(1) == "None":
                return False
            log.warning("SIGTERM: Slurm is preempting job %s (PreemptTime=%s)", job_id, preempt_time.group(1))
            return True
        failure = (f"exit {result.returncode}: {result.stderr.strip()}" if result.returncode != 0
                   else "its answer has no PreemptTime")
    log.warning("SIGTERM: scontrol show job %s failed (%s), so whether Slurm is preempting the job is unknown: "
                "taken for a scancel, not requeued", job_id, " ".join(failure.split()))
    return False


def requeue_slurm_job() -> None:
    """Put this Slurm job back in the queue (`scontrol requeue`); it keeps its job id, so a run directory named
    after the id, with trainer.resume=auto, carries it on. Outside Slurm or without scontrol, say so."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None:
        log.warning("trainer.requeue=true, but this is not a Slurm job (SLURM_JOB_ID is not set): nothing to requeue")
        return
    if "SLURM_ARRAY_TASK_ID" in os.environ:  # an array task is requeued by its own id, JOB_TASK
        job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        log.warning("trainer.requeue=true, but scontrol is not on PATH: Slurm job %s is not requeued; submit it "
                    "again with trainer.resume=auto to carry on", job_id)
        return
    try:
        result = subprocess.run([scontrol, "requeue", job_id], capture_output=True, text=True,
                                timeout=SCONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.error("scontrol requeue %s did not answer within %g s: the job may not be requeued; submit it again with "
                  "trainer.resume=auto to carry on", job_id, SCONTROL_TIMEOUT_S)
        return
    if result.returncode != 0:
        log.error("scontrol requeue %s failed (exit %d): %s", job_id, result.returncode, result.stderr.strip())
    else:
        log.info("requeued Slurm job %s: it carries on from last.pt with trainer.resume=auto", job_id)


def answer_stop_signal(requests: StopRequests, requeue: bool, is_main: bool) -> signal.Signals:
    """After a run stopped by a signal saved its state: hand the signals on to a host's own handler (submitit's:
    checkpoint, requeue, exit), or with trainer.requeue ask Slurm to requeue the job (one process asks). Returns
    the signal, which the run exits by."""
    received = requests.received
    # scancel and a preemption both send SIGTERM: only a preempted job is to come back.
    preempted = (received is signal.SIGTERM and is_main and (requeue or requests.host_requeues)
                 and slurm_job_preempted())
    handed_on = requests.hand_on_to_host(preempted)  # the host's handler, if any, requeues
    if requeue and not handed_on and is_main and (received in REQUEUE_SIGNALS or preempted):
        requeue_slurm_job()
    return received

