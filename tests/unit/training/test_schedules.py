import math

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau, StepLR

from conftest import compose_config, options
from trainer.training.schedules import build_scheduler, warmup_cosine

BASE_LR = 0.5


def make_optimizer(lr=BASE_LR):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def lrs(optimizer, scheduler, steps):
    """The learning rate before step 0, 1, ..., steps (one optimiser step and one scheduler step in between)."""
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    return seen


def expected_lr(step, total_steps, warmup_steps, eta_min, lr=BASE_LR):
    """Linear from lr/warmup_steps up to lr over the warm-up, then cosine from lr to eta_min at total_steps."""
    if step < warmup_steps:
        start = 1 / warmup_steps
        return lr * (start + (1 - start) * step / warmup_steps)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * progress)) / 2


@pytest.mark.parametrize("total_steps, warmup_steps, eta_min", [(20, 4, 0.05), (30, 10, 0.0), (12, 1, 0.1)])
def test_warmup_cosine_rises_linearly_then_follows_the_cosine_to_eta_min(total_steps, warmup_steps, eta_min):
    optimizer = make_optimizer()
    seen = lrs(optimizer, warmup_cosine(optimizer, total_steps, warmup_steps, eta_min), total_steps)
    for step, lr in enumerate(seen):
        assert lr == pytest.approx(expected_lr(step, total_steps, warmup_steps, eta_min), abs=1e-9), step
    warmup = seen[:warmup_steps + 1]
    assert warmup == sorted(warmup) and seen[warmup_steps] == pytest.approx(BASE_LR)
    rises = [b - a for a, b in zip(warmup, warmup[1:])]
    assert rises == pytest.approx([rises[0]] * len(rises))  # linear: equal increments
    assert seen[total_steps] == pytest.approx(eta_min)


def test_warmup_cosine_without_warmup_is_plain_cosine():
    optimizer = make_optimizer()
    seen = lrs(optimizer, warmup_cosine(optimizer, total_steps=16, warmup_steps=0, eta_min=0.1), 16)
    assert seen == pytest.approx([0.1 + (BASE_LR - 0.1) * (1 + math.cos(math.pi * t / 16)) / 2 for t in range(17)])
    assert seen[8] == pytest.approx((BASE_LR + 0.1) / 2)


def test_every_scheduler_option_is_covered():
    assert options("scheduler") == ["cosine", "none", "plateau", "step"]


def build(option, *overrides, total_steps=40, mode="min"):
    optimizer = make_optimizer()
    cfg = compose_config(f"scheduler={option}", *overrides).scheduler
    return optimizer, *build_scheduler(cfg, optimizer, total_steps=total_steps, mode=mode)


def test_none_builds_no_scheduler():
    _, scheduler, interval = build("none")
    assert (scheduler, interval) == (None, None)


def test_step_decays_by_gamma_every_step_size_epochs():
    optimizer, scheduler, interval = build("step", "scheduler.step_size=3", "scheduler.gamma=0.1")
    assert isinstance(scheduler, StepLR) and interval == "epoch"
    assert lrs(optimizer, scheduler, 7) == pytest.approx([0.5] * 3 + [0.05] * 3 + [0.005] * 2)


@pytest.mark.parametrize("total_steps", [10, 37])
def test_cosine_steps_every_batch_and_spans_the_runs_total_steps(total_steps):
    optimizer, scheduler, interval = build("cosine", "scheduler.eta_min=0.01", total_steps=total_steps)
    assert interval == "step"
    seen = lrs(optimizer, scheduler, total_steps)
    assert seen[0] == pytest.approx(BASE_LR)
    assert seen[total_steps] == pytest.approx(0.01)
    assert min(seen) == pytest.approx(0.01)
    assert seen[total_steps // 2] == pytest.approx(expected_lr(total_steps // 2, total_steps, 0, 0.01))


def test_cosine_warmup_steps_come_from_the_config():
    optimizer, scheduler, _ = build("cosine", "scheduler.warmup_steps=5", total_steps=25)
    seen = lrs(optimizer, scheduler, 25)
    assert seen == pytest.approx([expected_lr(t, 25, 5, 0.0) for t in range(26)], abs=1e-9)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_plateau_judges_the_metric_in_the_mode_passed_in(mode):
    optimizer, scheduler, interval = build("plateau", "scheduler.patience=1", mode=mode)
    assert isinstance(scheduler, ReduceLROnPlateau) and interval == "epoch"
    assert scheduler.mode == mode
    improving = [1.0, 2.0, 3.0, 4.0] if mode == "max" else [4.0, 3.0, 2.0, 1.0]
    for value in improving:
        scheduler.step(value)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(BASE_LR)
    for value in [improving[-1]] * 3:  # no better: after patience=1 such epochs the lr halves
        scheduler.step(value)
    assert optimizer.param_groups[0]["lr"] < BASE_LR
