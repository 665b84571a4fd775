"""trainer.inspect=true: one step shown in full. Its gradients are autograd's, its update is the optimiser's,
its outputs are the step's own (the same dropout masks), and weights of your own reproduce a hand computation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from conftest import compose_config
from trainer.observe.inspection import format_values, inspect_one_step
from trainer.run import build, train

TINY = ("data=xor", "model.hidden_sizes=[2]", "data.batch_size=4", "trainer.curves=false", "trainer.inspect=true")


def inspect_in(run_dir: Path, *overrides: str) -> dict:
    train(compose_config(*TINY, *overrides), run_dir)
    return json.loads((run_dir / "inspect.json").read_text())


def values(described: dict) -> torch.Tensor:
    return torch.tensor(described["values"])


def loaded_mlp(report: dict, when: str) -> torch.nn.Module:
    """The MLP of xor with hidden_sizes=[2], holding the inspected weights from before or after the step."""
    from trainer.models import MLP

    model = MLP(input_shape=(2,), num_outputs=1, hidden_sizes=[2])
    model.load_state_dict({name: values(p[when]) for name, p in report["parameters"].items()})
    return model


def test_the_gradients_are_autograds_and_sgd_moves_each_weight_by_minus_lr_times_its_gradient(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="trainer.run")
    lr = 0.3
    report = inspect_in(run_dir, "optimizer=sgd", f"optimizer.lr={lr}")
    model = loaded_mlp(report, "before")
    x, y = values(report["batch"]["x"]), values(report["batch"]["y"])
    loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y.float())
    expected = torch.autograd.grad(loss, list(model.parameters()))
    printed = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("one step of SGD (lr 0.3"))

    assert report["loss_before"] == pytest.approx(loss.item(), rel=1e-6)
    for (name, parameter), grad in zip(report["parameters"].items(), expected):
        torch.testing.assert_close(values(parameter["grad"]), grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(values(parameter["after"]), values(parameter["before"]) - lr * grad,
                                   rtol=1e-5, atol=1e-7)
        assert f"  grad    {format_values(parameter['grad']['values'])}" in printed
        assert f"  before  {format_values(parameter['before']['values'])}" in printed
    after = loaded_mlp(report, "after")
    loss_after = F.binary_cross_entropy_with_logits(after(x)[:, 0], y.float()).item()
    assert report["loss_after"] == pytest.approx(loss_after, rel=1e-6)
    assert f"loss after     {loss_after:.6g}" in printed


def test_weights_of_your_own_reproduce_a_hand_computed_step(run_dir, tmp_path):
    # Every weight 0.5, every bias 0, ReLU: output = 0.5 * relu(0.5 * (x1 + x2)) * 2 = 0.5 * relu(x1 + x2).
    weights = {"hidden.0.linear.weight": torch.full((2, 2), 0.5), "hidden.0.linear.bias": torch.zeros(2),
               "head.weight": torch.full((1, 2), 0.5), "head.bias": torch.zeros(1)}
    torch.save(weights, tmp_path / "weights.pt")
    report = inspect_in(run_dir, "optimizer=sgd", "optimizer.lr=1.0", f"trainer.init_from={tmp_path / 'weights.pt'}")
    x, y = values(report["batch"]["x"]).double(), values(report["batch"]["y"]).double()
    logit = 0.5 * (x[:, 0] + x[:, 1]).clamp(min=0)
    probability = 1 / (1 + torch.exp(-logit))
    by_hand = -(y * probability.log() + (1 - y) * (1 - probability).log()).mean()

    assert values(report["output_before"])[:, 0].double() == pytest.approx(logit.tolist(), rel=1e-6)
    assert report["loss_before"] == pytest.approx(by_hand.item(), rel=1e-6)
    head_bias_grad = (probability - y).mean()  # d loss / d logit, averaged over the batch
    assert values(report["parameters"]["head.bias"]["grad"]).item() == pytest.approx(head_bias_grad.item(), rel=1e-5)
    assert values(report["parameters"]["head.bias"]["after"]).item() == pytest.approx(-head_bias_grad.item(), rel=1e-5)


def test_the_output_before_is_the_steps_own_under_dropout(run_dir):
    report = inspect_in(run_dir, "model=dropout_net", "model.hidden_sizes=[16]", "model.dropout=0.5",
                        "data.batch_size=32")
    output, y = values(report["output_before"]), values(report["batch"]["y"])

    # Other dropout masks would give another loss: this one is the loss the step minimised.
    assert F.binary_cross_entropy_with_logits(output[:, 0], y.float()).item() == pytest.approx(
        report["loss_before"], rel=1e-6)


def test_batchnorms_running_statistics_move_once_as_in_the_step_alone(run_dir):
    run = build(compose_config(*TINY, "model.hidden_sizes=[4]", "model.norm=batchnorm"), run_dir)
    report = inspect_one_step(run.engine, run.train)
    norm = run.engine.model.hidden[0].norm
    x = values(report["batch"]["x"])
    weight, bias = (values(report["parameters"][f"hidden.0.linear.{name}"]["before"]) for name in ("weight", "bias"))
    pre_norm = x @ weight.T + bias  # (B, 4)

    # Three forward passes in training mode, one update of the statistics: momentum 0.1 from zero.
    assert norm.num_batches_tracked.item() == 1
    torch.testing.assert_close(norm.running_mean, 0.1 * pre_norm.mean(dim=0), rtol=1e-5, atol=1e-7)


def test_inspect_trains_nothing_else_and_writes_only_its_report(run_dir):
    report = inspect_in(run_dir)

    assert {path.name for path in run_dir.iterdir()} == {"inspect.json", "health.csv"}
    assert set(report) == {"optimizer", "lr", "options", "batch", "output_before", "loss_before", "parameters",
                           "output_after", "loss_after"}
    assert report["optimizer"] == "Adam" and report["options"]["betas"] == [0.9, 0.999]


def test_large_tensors_are_summarised_in_the_printout_and_kept_whole_in_the_file_up_to_a_size(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="trainer.run")
    report = inspect_in(run_dir, "model.hidden_sizes=[128]", "data.batch_size=64")
    printed = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("one step of"))
    weight = report["parameters"]["hidden.0.linear.weight"]

    assert len(weight["grad"]["values"]) == 128  # 256 values: kept whole in inspect.json
    assert "hidden.0.linear.weight (128, 2)\n  before  mean " in printed
    assert weight["before"]["norm"] == pytest.approx(values(weight["before"]).norm().item(), rel=1e-6)
