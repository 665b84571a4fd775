"""trainer.on_nonfinite: what a step with a non-finite loss or gradient does to the run, at every precision."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from trainer.training import distributed
from trainer.training.precision import Precision

log = logging.getLogger(__name__)

ADVICE = "A lower optimizer.lr or trainer.grad_clip usually helps."


class NonFinitePolicy:
    """on_nonfinite=stop: the run stops at the first non-finite loss; best.pt keeps the best finite epoch. The
    losses stay on the device and are checked in one go when the progress bar reads the loss, and before
    anything is saved: noting a loss costs neither a sync nor a device op, where a check on the device at each
    step cost a tenth of a small step.
    on_nonfinite=skip: a step whose loss or a gradient is not finite is left out (the check is read at once, one
    sync per step), and the run stops once more than trainer.max_skipped steps were.
    At float16 both also stop a run whose loss scale fell below 1: its gradients are not finite in themselves."""

    def __init__(self, mode: str, max_skipped: int, model: nn.Module, precision: Precision, device: torch.device):
        self.mode, self.max_skipped = mode, max_skipped
        self.model, self.precision, self.device = model, precision, device
        self.skipped_steps = 0
        """Steps left out (skip) so far in the run; checkpoints keep it."""
        self.divergence: Optional[str] = None
        """Why training stopped on non-finite values, once it has."""
        self._unchecked_losses: list[tuple[int, torch.Tensor]] = []
        """stop: (step, objective) of the steps not checked yet."""

    def allows_step(self, objective: torch.Tensor, step: int, epoch: int) -> bool:
        """Whether step `step` (counting from 1) of `epoch` may update the weights. skip decides now: it checks
        the objective and every gradient (at float16 the objective alone: the gradients are still scaled up
        here, and overflow now and then by design, which the scaler answers itself by skipping that step)."""
        if self.mode == "stop":
            self._unchecked_losses.append((step, objective))
            return True
        finite = torch.isfinite(objective.detach())
        if not self.precision.scales_the_loss:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            grad_norms = torch.stack(torch._foreach_norm(grads)) if grads else objective.new_zeros(1)  # one per tensor
            finite = finite & torch.isfinite(grad_norms.sum())
        if finite.item():
            return True
        self.skipped_steps += 1
        log.warning("epoch %d, step %d: the loss or a gradient is not finite; step skipped (%d of at most %d)",
                    epoch, step, self.skipped_steps, self.max_skipped)
        if self.skipped_steps > self.max_skipped:
            self.divergence = (f"epoch {epoch}, step {step}: {self.skipped_steps} steps skipped for non-finite "
                               f"values, more than trainer.max_skipped={self.max_skipped}; stopping. {ADVICE}")
        return False

    def start_over(self, skipped_steps: int) -> None:
        """Forget the steps taken since the count of skipped ones was `skipped_steps` (trainer.find_lr's, whose
        learning rates are meant to make the loss diverge)."""
        self.skipped_steps, self.divergence, self._unchecked_losses = skipped_steps, None, []

    def diverged(self, step: int, epoch: int, lr: float, check_weights: bool = False) -> bool:
        """Whether the run must stop, `step` being the last taken: checks the losses noted since the last check
        (one sync) and names the first non-finite one. With `check_weights`, before a save within the epoch,
        also the weights (a gradient can be non-finite where the loss was not; at the epoch's end validation shows
        it). With several processes, all stop when one must (every process calls this at the same steps)."""
        if self.divergence is not None:
            return True
        problem = None
        if self._unchecked_losses:
            steps, losses = zip(*self._unchecked_losses)
            self._unchecked_losses = []
            finite = torch.isfinite(torch.stack(losses)).tolist()
            if not all(finite):
                problem = f"step {steps[finite.index(False)]}: the loss is not finite"
        if problem is None and check_weights and not self._weights_finite():
            problem = f"step {step}: a weight is not finite (a gradient was, though the loss was not)"
        if problem is None and self.precision.scales_the_loss and self.precision.scale() < 1:
            # The scaler skips a step whose gradients overflow and halves its scale. Below 1 the gradients are not
            # scaled up any more: they are not finite in themselves, and no step would ever be taken.
            problem = (f"step {step}: the gradients are not finite, even unscaled (the GradScaler skipped their "
                       f"steps, down to a scale of {self.precision.scale():.3g})")
        if distributed.any_rank(problem is not None, self.device) and problem is None:
            problem = f"by step {step}: another process's loss is not finite"  # all stop together
        if problem is not None:
            self.divergence = (f"epoch {epoch}, {problem}, at learning rate {lr:.3g}; stopping (trainer.on_nonfinite="
                               f"{self.mode}). best.pt keeps the best finite epoch. {ADVICE}")
        return self.divergence is not None

    def _weights_finite(self) -> bool:
        norms = torch._foreach_norm([p.detach() for p in self.model.parameters()])  # one per tensor
        return bool(torch.isfinite(torch.stack(norms).sum()))
