import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from conftest import options
from trainer.config import config_dir
from trainer.data import DataDescription, DataSplits
from trainer.training.losses import num_outputs, targets_for, weight_penalty
from trainer.models import MLP


def split_set(task, num_classes=None, num_targets=1, n=6):
    """A tiny DataSplits of the given task: class indices (n,) or float targets (n, num_targets)."""
    x = torch.randn(n, 4)
    y = torch.arange(n) % num_classes if task != "regression" else torch.randn(n, num_targets)
    regression = task == "regression"
    described = DataDescription(task=task, input_shape=(4,), num_classes=None if regression else num_classes,
                                num_targets=num_targets if regression else None)
    return DataSplits(train=(x, y), val=(x, y), test=(x, y), description=described)


def loss(name):
    """The criterion configs/loss/NAME.yaml builds."""
    return instantiate(OmegaConf.load(config_dir() / "loss" / f"{name}.yaml"))


@pytest.mark.parametrize("num_classes", [2, 10])
def test_cross_entropy_needs_one_logit_per_class(num_classes):
    task = "binary" if num_classes == 2 else "multiclass"
    assert num_outputs(nn.CrossEntropyLoss(), split_set(task, num_classes).description) == num_classes


def test_bce_needs_one_logit():
    assert num_outputs(nn.BCEWithLogitsLoss(), split_set("binary", 2).description) == 1


@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.L1Loss(), nn.SmoothL1Loss()], ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("num_targets", [1, 3])
def test_regression_losses_need_one_output_per_target(criterion, num_targets):
    assert num_outputs(criterion, split_set("regression", num_targets=num_targets).description) == num_targets


def test_targets_for_bce_are_float_columns():
    y = torch.tensor([0, 1, 1, 0])
    targets = targets_for(nn.BCEWithLogitsLoss(), y)
    assert targets.dtype == torch.float32 and targets.shape == (4, 1)
    assert torch.equal(targets[:, 0], torch.tensor([0.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("criterion, y", [
    (nn.CrossEntropyLoss(), torch.tensor([0, 2, 1])),
    (nn.MSELoss(), torch.randn(3, 2)),
    (nn.L1Loss(), torch.randn(3, 1)),
], ids=["cross_entropy", "mse", "l1"])
def test_targets_for_other_losses_are_unchanged(criterion, y):
    targets = targets_for(criterion, y)
    assert targets.dtype == y.dtype and torch.equal(targets, y)


def test_bce_targets_fit_the_loss_with_one_logit():
    y = torch.tensor([0, 1, 1])
    logits = torch.zeros(3, 1)
    assert nn.BCEWithLogitsLoss()(logits, targets_for(nn.BCEWithLogitsLoss(), y)).item() == pytest.approx(0.6931, 1e-3)


@pytest.mark.parametrize("l1, l2", [(0.1, 0.0), (0.0, 0.01), (0.03, 0.2)])
def test_weight_penalty_sums_weight_matrices_only(l1, l2):
    torch.manual_seed(0)
    model = MLP((5,), 2, hidden_sizes=(4, 3), norm="layernorm")
    with torch.no_grad():
        for layer in model.hidden:  # norm scales and biases that a wrong penalty would pick up
            layer.norm.weight.fill_(3.0)
            layer.norm.bias.fill_(-2.0)
            layer.linear.bias.fill_(5.0)
        model.head.bias.fill_(5.0)
    weights = [model.hidden[0].linear.weight, model.hidden[1].linear.weight, model.head.weight]
    expected = l1 * sum(w.abs().sum() for w in weights) + l2 * sum((w ** 2).sum() for w in weights)
    penalty = weight_penalty(model, l1, l2)
    assert penalty.detach().item() == pytest.approx(expected.detach().item(), rel=1e-6)


def test_weight_penalty_has_gradients_for_the_weights():
    model = MLP((5,), 2, hidden_sizes=(4,))
    weight_penalty(model, 0.0, 0.5).backward()
    assert torch.allclose(model.head.weight.grad, model.head.weight.detach())  # d(0.5 * w^2)/dw = w
    assert model.head.bias.grad is None


def test_weight_penalty_is_zero_when_both_weights_are_zero():
    assert weight_penalty(MLP((5,), 2), 0.0, 0.0) == 0


@pytest.mark.parametrize("name", [option for option in options("loss") if option != "auto"])  # auto: by the task
def test_every_loss_option_builds_a_criterion_that_scores_its_task_s_outputs(name):
    task, num_classes = {"cross_entropy": ("multiclass", 3), "bce": ("binary", 2)}.get(name, ("regression", None))
    data = split_set(task, num_classes)
    criterion = loss(name)
    output = torch.randn(6, num_outputs(criterion, data.description), requires_grad=True)  # (N, num_outputs)
    value = criterion(output, targets_for(criterion, data.train[1]))
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value) and output.grad.abs().sum() > 0
