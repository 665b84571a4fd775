"""When a run stops within an epoch, for a signal or divergence: at once alone, together with several processes."""

from __future__ import annotations

import logging
import signal

import torch

from trainer.training import distributed
from trainer.training.distributed import Processes
from trainer.training.interrupts import StopRequests
from trainer.vocabulary import StopReason

log = logging.getLogger(__name__)


class StopAgreement:
    """Every process of a distributed run must stop at the same step (each step waits for all of them), so they
    agree every `every_n_steps` steps, where the loss is read anyway; a lone process stops at the step a signal
    arrived in."""

    def __init__(self, requests: StopRequests, processes: Processes, device: torch.device, every_n_steps: int):
        self.requests = requests
        """The signals received during fit that ask it to save last.pt and stop."""
        self.processes, self.device, self.every_n_steps = processes, device, every_n_steps

    def within_the_epoch(self, step: int, diverged: bool) -> bool:
        """Whether to stop after step `step`: diverged, or asked to by a signal (at any process)."""
        if self.processes.distributed and step % self.every_n_steps != 0:
            return False
        return diverged or self.signal_received()

    def signal_received(self) -> bool:
        """Whether a stop signal arrived; with several processes, at any of them (all then stop, and name the
        same signal). The processes call this at the same steps."""
        received = self.requests.received
        if self.processes.distributed:
            signal_number = distributed.max_over_ranks(received.value if received is not None else 0, self.device)
            if not signal_number:  # a signal that arrived during the exchange is kept, for the next one
                return False
            received = self.requests.received = signal.Signals(signal_number)
        return received is not None

    def stopped_by_signal(self, epoch: int, step: int, dev_run: bool = False) -> StopReason:
        """Say where the run stopped, last.pt being saved, and how to go on; a dev run's last.pt goes with its
        scratch folder, and it cannot be resumed."""
        if dev_run:
            log.warning("stopped by %s at epoch %d, step %d; trainer.fast_dev_run keeps nothing to carry on from",
                        self.requests.received.name, epoch, step)
        else:
            log.warning("stopped by %s at epoch %d, step %d; last.pt saved (train ... trainer.resume=auto in the "
                        "same run directory carries on)", self.requests.received.name, epoch, step)
        return StopReason.INTERRUPTED
