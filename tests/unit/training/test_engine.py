"""The engine, built by `trainer.run.build` from the real configs: every option of every group trains, and the
trainer settings (precision, gradient clipping, weight penalties, checkpoints, the metrics log, early stopping,
the schedules) do what they say."""

from __future__ import annotations

import csv
import os
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import compose_config, metrics_rows, options
from helpers.signals import signal_during_step
from trainer.training import distributed
from trainer.training.checkpoint import load_checkpoint
from trainer.config import COMPILE_MODES, ConfigError
from trainer.data import Batcher
from trainer.vocabulary import StopReason
from trainer.training.stop_agreement import StopAgreement
from trainer.training.interrupts import StopRequests
from trainer.models import MLP
from trainer.run import Run, build
from trainer.vocabulary import measured_metrics

SMALL_MLP = "model.hidden_sizes=[32]"
"""Where the model is not what a test is about, a small one keeps the test fast."""

CLEARLY_LOWER = 0.75
"""A training loss 'went clearly down' when it ends below this fraction of where it started."""


def build_run(run_dir: Path, *overrides: str) -> Run:
    return build(compose_config("trainer.device=cpu", *overrides), run_dir)


def train_split_loss(run: Run) -> float:
    in_order = Batcher(*run.data.train, batch_size=1024, shuffle=False, normalize=run.data.description.pixels)
    return run.engine.evaluate(in_order)["loss"]


def assert_training_lowers_the_loss(run: Run, epochs: int) -> None:
    before = train_split_loss(run)
    for _ in range(epochs):
        run.engine.train_epoch(run.train)
    after = train_split_loss(run)
    assert after < CLEARLY_LOWER * before, f"train loss {before:.4f} -> {after:.4f} after {epochs} epochs"


def class_name(target: str) -> str:
    """'torch.optim.Adam' -> 'Adam'."""
    return target.rpartition(".")[2]


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows]


# --- every option of every group trains -------------------------------------------------------------------------

# Per data set: extra overrides and epochs. A data option missing here is trained with its own settings.
DATA_CASES = {
    "circles": (("data.n_samples=500",), 3),
    "moons": (("data.n_samples=500",), 3),
    "regression": (("data.n_samples=500",), 3),
    "xor": (("data.n_samples=500",), 3),
    "spiral": (("data.n_samples=1000",), 10),  # the hardest set: two interleaved arms take more epochs
}


@pytest.mark.parametrize("data", options("data"))
def test_every_data_set_trains_with_its_default_loss_and_the_mlp(run_dir, data):
    extra, epochs = DATA_CASES.get(data, ((), 3))
    run = build_run(run_dir, f"data={data}", "model=mlp", "model.hidden_sizes=[64,64]",
                    "optimizer.lr=0.01", *extra)
    assert_training_lowers_the_loss(run, epochs)


# Per model: overrides that shrink it without changing what it is.
MODEL_CASES = {
    "mlp": (SMALL_MLP,),
    "dropout_net": ("model.hidden_sizes=[64]",),
    "resnet": ("model.channels=[8,16]", "model.blocks_per_stage=1", "optimizer.lr=0.01"),
}


@pytest.mark.parametrize("model", options("model"))
def test_every_model_trains_on_digits(run_dir, model):
    run = build_run(run_dir, "data=digits", f"model={model}", *MODEL_CASES.get(model, ()))
    assert type(run.engine.model).__name__ == class_name(run.engine.config["model"]["_target_"])
    assert_training_lowers_the_loss(run, epochs=3)


# Each loss with the data sets it is meant for; a binary set can take either classification loss.
LOSS_DATA = {
    "bce": ["moons"],
    "cross_entropy": ["moons", "digits"],
    "mse": ["regression"],
    "smooth_l1": ["regression"],
    "l1": ["regression"],
    "auto": ["moons", "regression", "csv"],
}
AUTO_LOSS = {"multiclass": "CrossEntropyLoss", "binary": "BCEWithLogitsLoss", "regression": "MSELoss"}
SMALL_SYNTHETIC = ("data.n_samples=500", "optimizer.lr=0.01")


@pytest.mark.parametrize("loss, data", [(loss, data) for loss in options("loss") for data in LOSS_DATA.get(loss, [None])])
def test_every_loss_trains_on_a_data_set_of_its_task(run_dir, loss, data):
    if data is None:
        pytest.fail(f"loss={loss} has no data set to train on here: add it to LOSS_DATA")
    run = build_run(run_dir, f"loss={loss}", f"data={data}", SMALL_MLP,
                    *(SMALL_SYNTHETIC if data not in ("digits", "csv") else ()),
                    *(("data.batch_size=16", "optimizer.lr=0.01") if data == "csv" else ()))  # only 300 rows
    task = run.data.description.task
    expected = AUTO_LOSS[task] if loss == "auto" else class_name(run.engine.config["loss"]["_target_"])
    assert type(run.engine.criterion).__name__ == expected
    assert_training_lowers_the_loss(run, epochs=3)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer_trains_on_digits(run_dir, optimizer):
    run = build_run(run_dir, "data=digits", f"optimizer={optimizer}", SMALL_MLP)
    assert type(run.engine.optimizer).__name__ == class_name(run.engine.config["optimizer"]["_target_"])
    assert_training_lowers_the_loss(run, epochs=3)


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_scheduler_trains_on_digits_through_fit(run_dir, scheduler):
    # fit, not train_epoch: epoch schedules step after each validation, which only fit runs.
    run = build_run(run_dir, "data=digits", f"scheduler={scheduler}", SMALL_MLP, "optimizer.lr=0.003",
                    "trainer.max_epochs=3")
    assert (run.engine.scheduler is None) == (scheduler == "none")
    before = train_split_loss(run)
    run.engine.fit(run.train, run.val)
    after = train_split_loss(run)
    assert after < CLEARLY_LOWER * before, f"train loss {before:.4f} -> {after:.4f}"


# --- trainer settings -------------------------------------------------------------------------------------------

def test_bf16_precision_trains_on_cpu_with_a_bfloat16_forward_pass(run_dir):
    run = build_run(run_dir, "trainer.precision=bf16", SMALL_MLP)
    head_output_dtypes = []
    run.engine.model.head.register_forward_hook(lambda module, inputs, output: head_output_dtypes.append(output.dtype))
    assert_training_lowers_the_loss(run, epochs=3)
    assert head_output_dtypes and set(head_output_dtypes) == {torch.bfloat16}


def _first_sgd_step(run_dir: Path, lr: float, *overrides: str) -> tuple[float, float]:
    """One optimiser step of plain SGD on the first 64 training samples: (norm of the change of all parameters,
    norm of the gradients the step used)."""
    run = build_run(run_dir, SMALL_MLP, "optimizer=sgd", f"optimizer.lr={lr}", *overrides)
    parameters = list(run.engine.model.parameters())
    before = [p.detach().clone() for p in parameters]
    x, y = run.data.train
    run.engine.train_step([(x[:64], y[:64])])
    update = torch.cat([(p.detach() - b).flatten() for p, b in zip(parameters, before)]).norm().item()
    grad = torch.cat([p.grad.flatten() for p in parameters]).norm().item()
    return update, grad


def test_grad_clip_rescales_the_gradient_to_the_clip_norm(run_dir):
    lr, clip = 0.1, 1e-3
    free_update, free_grad = _first_sgd_step(run_dir, lr)
    clipped_update, clipped_grad = _first_sgd_step(run_dir, lr, f"trainer.grad_clip={clip}")
    assert free_grad > 100 * clip, "the unclipped gradient must be far above the clip for this test to mean anything"
    assert free_update == pytest.approx(lr * free_grad, rel=1e-4)
    assert clipped_grad == pytest.approx(clip, rel=1e-3)
    assert clipped_update == pytest.approx(lr * clip, rel=1e-3)


def test_grad_clip_by_value_clamps_every_gradient_element(run_dir):
    clip = 1e-4
    run = build_run(run_dir, SMALL_MLP, "optimizer=sgd", f"trainer.grad_clip={clip}",
                    "trainer.grad_clip_algorithm=value")
    x, y = run.data.train
    run.engine.train_step([(x[:64], y[:64])])
    grads = torch.cat([p.grad.flatten() for p in run.engine.model.parameters()])
    assert grads.abs().max().item() == pytest.approx(clip)  # the largest were clamped, none is larger
    assert (grads.abs() < clip).any()  # and the small ones kept their values (clipping by norm scales them all)


@pytest.mark.parametrize("weights", ["equal batches", "a short last batch"])
def test_accumulating_k_batches_steps_as_one_batch_of_all_their_samples(run_dir, weights):
    sizes = [16, 16, 16] if weights == "equal batches" else [16, 16, 5]

    def parameters_after_one_step(split: bool) -> list[torch.Tensor]:
        run = build_run(run_dir, SMALL_MLP, "optimizer=momentum", "trainer.l2=0.001")
        x, y = run.data.train
        batches = list(zip(x[:sum(sizes)].split(sizes), y[:sum(sizes)].split(sizes)))
        run.engine.train_step(batches if split else [(x[:sum(sizes)], y[:sum(sizes)])])
        return [p.detach().clone() for p in run.engine.model.parameters()]

    accumulated, whole = parameters_after_one_step(split=True), parameters_after_one_step(split=False)
    for a, b in zip(accumulated, whole):  # (both runs start from the same weights: build seeds them alike)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulate_grad_batches_takes_one_step_per_k_batches_and_the_schedule_spans_them(run_dir):
    run = build_run(run_dir, SMALL_MLP, "trainer.accumulate_grad_batches=3", "scheduler=cosine",
                    "trainer.max_epochs=2")
    batches = len(run.train)
    run.engine.fit(run.train, run.val)
    assert run.engine.global_step == 2 * -(-batches // 3)
    assert run.engine.scheduler.last_epoch == run.engine.global_step  # cosine reached its end, not a third of it
    assert run.engine.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_compile_trains_the_compiled_model_and_saves_the_plain_one(run_dir, monkeypatch, mode):
    compiled, modes, compile = [], [], torch.compile

    def compile_with_the_eager_backend(model, mode):  # the wiring is under test, not inductor's minute of C++ builds
        modes.append(mode)
        compiled.append(compile(model, backend="eager"))
        return compiled[-1]

    monkeypatch.setattr("trainer.training.compilation.torch.compile", compile_with_the_eager_backend)
    run = build_run(run_dir, SMALL_MLP, "trainer.compile=true", f"trainer.compile_mode={mode}", "trainer.max_epochs=2")
    assert run.engine.train_model is compiled[0] and run.engine.eval_model is compiled[0] and modes == [mode]
    run.engine.fit(run.train, run.val)
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    assert list(saved) == list(MLP(input_shape=(64,), num_outputs=10, hidden_sizes=[32]).state_dict())
    assert float(read_metrics(run_dir)[-1]["train_loss"]) < float(read_metrics(run_dir)[0]["train_loss"])


def test_compile_without_a_cxx_compiler_on_a_cpu_is_refused_in_one_line(run_dir, monkeypatch):
    monkeypatch.setattr("trainer.training.compilation.shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match=r"trainer.compile: got True, expected false on this machine: .*C\+\+ compiler"):
        build_run(run_dir, SMALL_MLP, "trainer.compile=true")


@pytest.mark.parametrize("penalty, norm", [
    ("trainer.l1=0.001", lambda w: w.abs().sum()),
    ("trainer.l2=0.01", lambda w: w.pow(2).sum()),
], ids=["l1", "l2"])
def test_weight_penalty_shrinks_the_weights_compared_with_none(run_dir, penalty, norm):
    def weight_norm_after_two_epochs(*overrides: str) -> float:
        run = build_run(run_dir, SMALL_MLP, "seed=0", *overrides)
        for _ in range(2):
            run.engine.train_epoch(run.train)
        return sum(norm(p.detach()) for p in run.engine.model.parameters() if p.dim() >= 2).item()

    plain = weight_norm_after_two_epochs("trainer.l1=0", "trainer.l2=0")
    penalised = weight_norm_after_two_epochs(penalty)
    assert penalised < 0.95 * plain


# --- fit: outputs, best checkpoint, early stopping --------------------------------------------------------------

@pytest.mark.parametrize("data, metric_columns", [
    (["data=digits"], ["val_loss", "val_accuracy"]),
    (["data=regression", "data.n_samples=500"], ["val_loss", "val_mse", "val_rmse", "val_r2"]),
], ids=["classification", "regression"])
def test_fit_writes_both_checkpoints_and_one_metrics_row_per_epoch(run_dir, data, metric_columns):
    run = build_run(run_dir, *data, SMALL_MLP, "trainer.max_epochs=3")
    result = run.engine.fit(run.train, run.val)

    assert (result.epochs, result.stop_reason) == (3, StopReason.MAX_EPOCHS)
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    rows = read_metrics(run_dir)
    assert list(rows[0]) == ["epoch", "step", "lr", "train_loss", *metric_columns, "seconds"]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    assert [int(row["step"]) for row in rows] == [len(run.train) * epoch for epoch in (1, 2, 3)]
    assert all(value != "" for row in rows for value in row.values())


def _validation_metrics_of(checkpoint: Path, run_dir: Path, *overrides: str) -> dict[str, float]:
    """The validation metrics of a checkpoint's weights, loaded into a freshly built model."""
    fresh = build_run(run_dir, *overrides)
    fresh.engine.model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return fresh.engine.evaluate(fresh.val)


def test_best_checkpoint_reloaded_gives_the_validation_metrics_of_the_best_epoch(tmp_path):
    # mode=max on a falling val_loss makes the first epoch the best, so best.pt and last.pt must differ.
    overrides = (SMALL_MLP, "trainer.max_epochs=3", "trainer.early_stopping.mode=max")
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    run = build_run(fit_dir, *overrides)
    result = run.engine.fit(run.train, run.val)
    rows = read_metrics(fit_dir)
    best_row = max(rows, key=lambda row: float(row["val_loss"]))
    assert result.best_epoch == int(best_row["epoch"])
    assert best_row is not rows[-1], "val_loss did not fall, so this run cannot tell best.pt from last.pt"

    best = _validation_metrics_of(fit_dir / "checkpoints" / "best.pt", tmp_path, *overrides)
    last = _validation_metrics_of(fit_dir / "checkpoints" / "last.pt", tmp_path, *overrides)
    assert best["loss"] == pytest.approx(float(best_row["val_loss"]), rel=1e-5)
    assert best["accuracy"] == pytest.approx(float(best_row["val_accuracy"]), abs=1e-6)
    assert best["loss"] == pytest.approx(result.best_value, rel=1e-5)
    assert last["loss"] == pytest.approx(float(rows[-1]["val_loss"]), rel=1e-5)


@pytest.mark.parametrize("patience, epochs, stop_reason", [
    ("2", 3, StopReason.EARLY_STOPPING),
    ("null", 5, StopReason.MAX_EPOCHS),
])
def test_early_stopping_ends_fit_after_patience_epochs_without_improvement(run_dir, patience, epochs, stop_reason):
    # min_delta=1e9: no epoch after the first counts as an improvement, however the loss moves.
    run = build_run(run_dir, SMALL_MLP, "trainer.max_epochs=5", f"trainer.early_stopping.patience={patience}",
                    "trainer.early_stopping.min_delta=1e9")
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs, result.best_epoch) == (stop_reason, epochs, 1)
    assert len(read_metrics(run_dir)) == epochs


# --- schedules --------------------------------------------------------------------------------------------------

def test_cosine_schedule_anneals_the_lr_to_eta_min_by_the_last_step(run_dir):
    run = build_run(run_dir, SMALL_MLP, "scheduler=cosine", "scheduler.eta_min=1e-5", "optimizer.lr=0.01",
                    "trainer.max_epochs=3")
    run.engine.fit(run.train, run.val)
    lrs = column(read_metrics(run_dir), "lr")  # each epoch's lr at its start
    assert lrs[0] == pytest.approx(0.01)
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == 3
    assert run.engine.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5, rel=1e-6)


def test_step_schedule_halves_the_lr_every_step_size_epochs(run_dir):
    run = build_run(run_dir, SMALL_MLP, "scheduler=step", "scheduler.step_size=2", "scheduler.gamma=0.5",
                    "optimizer.lr=0.01", "trainer.max_epochs=5")
    run.engine.fit(run.train, run.val)
    assert column(read_metrics(run_dir), "lr") == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


@pytest.mark.parametrize("overrides, mode", [
    (["trainer.early_stopping.monitor=val_accuracy"], "max"),
    (["trainer.early_stopping.monitor=val_loss"], "min"),
    (["data=regression", "data.n_samples=300", "trainer.early_stopping.monitor=val_r2"], "max"),
    (["data=regression", "data.n_samples=300", "trainer.early_stopping.monitor=val_rmse"], "min"),
    (["trainer.early_stopping.monitor=val_loss", "trainer.early_stopping.mode=max"], "max"),
], ids=["val_accuracy", "val_loss", "val_r2", "val_rmse", "explicit-mode"])
def test_plateau_schedule_judges_the_monitored_metric_in_its_direction(run_dir, overrides, mode):
    run = build_run(run_dir, SMALL_MLP, "scheduler=plateau", *overrides)
    assert isinstance(run.engine.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert run.engine.scheduler.mode == mode


PRECISIONS = pytest.mark.parametrize("precision", ["32", "bf16", "16"])
"""on_nonfinite holds at every precision: at 16 the steps go through a GradScaler, which skips steps of its own."""


@PRECISIONS
def test_a_diverging_run_stops_within_its_first_epoch_and_keeps_no_diverged_checkpoint(run_dir, precision):
    run = build_run(run_dir, SMALL_MLP, "optimizer=sgd", "optimizer.lr=1e4", "trainer.max_epochs=5",
                    f"trainer.precision={precision}")
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs, result.best_epoch) == (StopReason.DIVERGED, 0, None)
    assert re.match(r"epoch 1, step \d+: the loss is not finite, at learning rate 1e\+04",
                    run.engine.nonfinite.divergence)
    assert not (run_dir / "checkpoints" / "best.pt").exists()
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    assert run.engine.test(run.test) == {}


def test_a_run_that_diverges_later_leaves_best_pt_as_it_was(run_dir):
    run = build_run(run_dir, SMALL_MLP, "optimizer=sgd", "trainer.max_epochs=2")
    run.engine.fit(run.train, run.val)
    best = (run_dir / "checkpoints" / "best.pt").read_bytes()
    run.engine.settings.max_epochs = 4
    for group in run.engine.optimizer.param_groups:
        group["lr"] = 1e8  # the injected fault: every weight overshoots to inf within a few steps
    result = run.engine.fit(run.train, run.val)
    assert (result.stop_reason, result.epochs, result.best_epoch) == (StopReason.DIVERGED, 2, 2)
    assert run.engine.nonfinite.divergence.startswith("epoch 3, step ")
    assert (run_dir / "checkpoints" / "best.pt").read_bytes() == best
    assert run.engine.test(run.test)["accuracy"] > 0.5  # the best weights, not the diverged ones


def nan_batch(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = next(iter(run.train))
    return torch.full_like(x, float("nan")), y


@PRECISIONS
@pytest.mark.parametrize("max_skipped, batches, skipped, stopped", [
    (1, "good nan good", 1, False),
    (1, "nan good nan", 2, True),
    (0, "nan", 1, True),
    (3, "nan nan nan", 3, False),
])
def test_skip_leaves_non_finite_steps_out_and_stops_after_max_skipped(run_dir, max_skipped, batches, skipped,
                                                                        stopped, precision):
    run = build_run(run_dir, SMALL_MLP, "trainer.on_nonfinite=skip", f"trainer.max_skipped={max_skipped}",
                    f"trainer.precision={precision}")
    good = next(iter(run.train))
    for kind in batches.split():
        before = [p.clone() for p in run.engine.model.parameters()]
        loss = run.engine.train_step([good if kind == "good" else nan_batch(run)])
        unchanged = all(torch.equal(a, b) for a, b in zip(before, run.engine.model.parameters()))
        assert (loss is None, unchanged) == ((True, True) if kind == "nan" else (False, False))
    assert run.engine.nonfinite.skipped_steps == skipped
    assert (run.engine.nonfinite.divergence is not None) == stopped


@PRECISIONS
def test_stop_records_the_first_non_finite_step_without_reading_it_at_once(run_dir, precision):
    run = build_run(run_dir, SMALL_MLP, f"trainer.precision={precision}")
    good = next(iter(run.train))
    engine = run.engine
    engine.train_step([good])
    assert not engine.nonfinite.diverged(engine.global_step, engine.epoch + 1, engine.lr)
    engine.train_step([nan_batch(run)])  # the second step
    engine.train_step([good])
    assert engine.nonfinite.diverged(engine.global_step, engine.epoch + 1, engine.lr)
    assert engine.nonfinite.divergence.startswith("epoch 1, step 2: the loss is not finite")


def test_at_precision_16_gradients_that_overflow_are_the_scaler_s_to_skip_not_counted_as_non_finite(run_dir):
    run = build_run(run_dir, SMALL_MLP, "trainer.precision=16", "trainer.on_nonfinite=skip",
                    "trainer.max_skipped=0")
    good = next(iter(run.train))
    run.engine.train_step([good])
    run.engine.precision.scaler.update(new_scale=2.0**100)  # float16's gradients overflow at this scale
    before = [p.clone() for p in run.engine.model.parameters()]
    loss = run.engine.train_step([good])
    assert loss is not None and torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, run.engine.model.parameters()))  # the scaler skipped it
    assert run.engine.precision.scaler.get_scale() < 2.0**100
    assert (run.engine.nonfinite.skipped_steps, run.engine.nonfinite.divergence) == (0, None)


class InfiniteGradient(MLP):
    """The MLP plus 0 * sqrt(z) at z = 0: a finite output whose gradient is not (d/dz sqrt(z) is inf there, and
    0 * inf is nan)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.z = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 0 * torch.sqrt(self.z)


def test_a_non_finite_gradient_under_a_finite_loss_never_reaches_a_mid_epoch_checkpoint(run_dir):
    run = build_run(run_dir, SMALL_MLP, "model._target_=test_engine.InfiniteGradient",
                    "trainer.checkpoint.every_n_steps=1")
    result = run.engine.fit(run.train, run.val)
    assert result.stop_reason is StopReason.DIVERGED
    assert run.engine.nonfinite.divergence.startswith("epoch 1, step 1: a weight is not finite (a gradient was, "
                                                      "though the loss was not)")
    assert not (run_dir / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_at_precision_16_gradients_not_finite_at_any_scale_stop_the_run(run_dir, policy):
    """The scaler would skip every step and halve its scale for ever, training nothing: once the scale is below 1
    the gradients are not finite in themselves, and the run stops as a diverged one, naming that."""
    run = build_run(run_dir, SMALL_MLP, "model._target_=test_engine.InfiniteGradient", "trainer.precision=16",
                    f"trainer.on_nonfinite={policy}")
    result = run.engine.fit(run.train, run.val)
    assert result.stop_reason is StopReason.DIVERGED
    divergence = run.engine.nonfinite.divergence
    assert "the gradients are not finite, even unscaled (the GradScaler skipped their steps, down to a scale of " in (
        divergence)
    assert divergence.endswith(f"(trainer.on_nonfinite={policy}). best.pt keeps the best finite epoch. A "
                               f"lower optimizer.lr or trainer.grad_clip usually helps.")


def test_train_loss_leaves_out_the_weight_penalty(run_dir):
    run = build_run(run_dir, SMALL_MLP, "trainer.l2=100", "optimizer=sgd", "optimizer.lr=1e-9")
    x, y = next(iter(run.train))
    with torch.no_grad():
        data_loss = run.engine.criterion(run.engine.model(x), y)
    assert run.engine.train_step([(x, y)]).item() == pytest.approx(data_loss.item(), rel=1e-4)


def test_a_last_batch_of_one_sample_is_dropped_when_the_model_has_batchnorm(run_dir):
    # digits trains on 1,258 samples: batches of 419 leave 1 over, which BatchNorm cannot normalise.
    run = build_run(run_dir, SMALL_MLP, "model.norm=batchnorm", "data.batch_size=419")
    assert run.train.num_samples == 1258
    assert run.train.drop_last and len(run.train) == 3
    run.engine.train_epoch(run.train)
    plain = build_run(run_dir, SMALL_MLP, "data.batch_size=419")
    assert not plain.train.drop_last and len(plain.train) == 4


def test_drop_last_is_a_data_setting(run_dir):
    run = build_run(run_dir, SMALL_MLP, "data.drop_last=true", "data.batch_size=100")
    assert [len(y) for _, y in run.train] == [100] * 12


@pytest.mark.parametrize("data", ["data=digits", "data=moons", "data=regression"])
def test_evaluate_measures_what_validate_expects_of_the_task(run_dir, data):
    run = build_run(run_dir, SMALL_MLP, data, "data.n_samples=200" if data != "data=digits" else "seed=0")
    measured = run.engine.evaluate(run.val)
    assert tuple(f"val_{name}" for name in measured) == measured_metrics(run.data.description.task)


def assert_same_parameters_and_metrics(run: Run, reference: Run) -> None:
    """The same parameters, bit for bit, and the same metrics.csv rows (but for their seconds)."""
    for (name, expected), actual in zip(reference.engine.model.state_dict().items(),
                                        run.engine.model.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert metrics_rows(run.metrics_log.path.parent) == metrics_rows(reference.metrics_log.path.parent)


@pytest.mark.parametrize("model", ["mlp", "dropout_net"])
def test_a_run_resumed_from_last_pt_at_an_epoch_boundary_ends_bit_identical(tmp_path, model):
    # Dropout draws from torch's RNG and cosine steps every batch: both must come back exactly.
    overrides = (f"model={model}", "model.hidden_sizes=[32]", "scheduler=cosine", "trainer.deterministic=true",
                 "trainer.max_epochs=4")
    for name in ("whole", "part"):
        (tmp_path / name).mkdir()
    whole = build_run(tmp_path / "whole", *overrides)
    whole.engine.fit(whole.train, whole.val)

    interrupted = build_run(tmp_path / "part", *overrides)
    interrupted.engine.settings.max_epochs = 2  # as if killed after epoch 2; the schedule still spans 4
    interrupted.engine.fit(interrupted.train, interrupted.val)
    torch.manual_seed(12345)  # whatever the RNGs did since, the checkpoint's states must win

    resumed = build_run(tmp_path / "part", *overrides, "trainer.resume=auto")  # Engine.load_state_dict(last.pt)
    assert (resumed.engine.epoch, resumed.train.epoch, resumed.train.position) == (2, 2, 0)
    resumed.engine.fit(resumed.train, resumed.val)

    assert_same_parameters_and_metrics(resumed, whole)
    assert len(metrics_rows(tmp_path / "whole")) == 4


def test_checkpoints_hold_the_batcher_position_and_every_rng_state(run_dir):
    run = build_run(run_dir, SMALL_MLP, "trainer.max_epochs=1")
    run.engine.fit(run.train, run.val)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # weights_only=True: plain values and tensors
    assert state["batcher"] == {"seed": 0, "epoch": 1, "position": 0}
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert state["engine"] == {"epoch": 1, "global_step": len(run.train), "skipped_steps": 0,
                               "train_seconds": state["engine"]["train_seconds"], "starts": 1}
    assert 0 < state["engine"]["train_seconds"] <= run.engine.seconds_trained


# --- mid-epoch checkpoints and stop signals ---------------------------------------------------------------------

EXACT = ("model=dropout_net", "model.hidden_sizes=[16]", "data=moons", "data.n_samples=200", "data.batch_size=32",
         "scheduler=cosine", "trainer.deterministic=true", "trainer.max_epochs=2")
"""A small run whose resume must be exact: dropout draws from torch's RNG, cosine steps every batch, and the
140 training samples make 5 batches an epoch, the last one short."""


def test_every_n_steps_saves_last_pt_within_the_epoch_and_keeps_the_one_before(run_dir, monkeypatch):
    import trainer.training.engine

    saved = []
    real_save = trainer.training.engine.save_checkpoint
    monkeypatch.setattr(trainer.training.engine, "save_checkpoint", lambda state, path, **options: (
        saved.append((path.name, state["engine"]["global_step"], state["batcher"]["position"])),
        real_save(state, path, **options)))
    run = build_run(run_dir, *EXACT, "trainer.checkpoint.every_n_steps=2")
    run.engine.fit(run.train, run.val)
    last_saves = [(step, position) for name, step, position in saved if name == "last.pt"]
    # steps 2 and 4 within epoch 1, its end (step 5, position 0 of the next epoch), then 6 and 8, and the end
    assert last_saves == [(2, 2), (4, 4), (5, 0), (6, 1), (8, 3), (10, 0)]
    previous = load_checkpoint(run_dir / "checkpoints" / "last.previous.pt")
    assert previous["engine"]["global_step"] == 8


@pytest.mark.parametrize("pipeline", [["data.pipeline=device"], ["data.pipeline=dataloader", "data.num_workers=0"]],
                         ids=["device", "dataloader"])
def test_a_run_resumed_from_any_step_ends_bit_identical(tmp_path, monkeypatch, pipeline):
    """Save last.pt after every step, then resume a fresh run from each of those files in turn: wherever a kill
    had struck, the run would end with the same parameters and metrics.csv rows."""
    import trainer.training.engine

    snapshots = []
    real_save = trainer.training.engine.save_checkpoint
    monkeypatch.setattr(trainer.training.engine, "save_checkpoint", lambda state, path, **options: (
        real_save(state, path, **options),
        snapshots.append(path.read_bytes()) if path.name == "last.pt" else None))
    (tmp_path / "whole").mkdir()
    whole = build_run(tmp_path / "whole", *EXACT, *pipeline, "trainer.checkpoint.every_n_steps=1")
    whole.engine.fit(whole.train, whole.val)
    monkeypatch.undo()
    assert len(snapshots) == 10  # after steps 1-4, epoch 1 (step 5), steps 6-9, epoch 2 (the end)

    for number, snapshot in enumerate(snapshots):
        run_dir = tmp_path / f"resumed-{number}"
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(snapshot)
        torch.manual_seed(12345)  # whatever the RNGs did since, the checkpoint's states must win
        resumed = build_run(run_dir, *EXACT, *pipeline, "trainer.checkpoint.every_n_steps=1", "trainer.resume=auto")
        resumed.engine.fit(resumed.train, resumed.val)
        assert_same_parameters_and_metrics(resumed, whole)


def uninterrupted_and_to_interrupt(tmp_path: Path) -> tuple[Run, Run]:
    """The EXACT run fitted whole in tmp_path/whole, and the same run built in tmp_path/part, for a test to stop."""
    for name in ("whole", "part"):
        (tmp_path / name).mkdir()
    whole = build_run(tmp_path / "whole", *EXACT)
    whole.engine.fit(whole.train, whole.val)
    return whole, build_run(tmp_path / "part", *EXACT)


def test_a_stop_signal_finishes_the_step_saves_last_pt_and_resume_is_exact(tmp_path):
    whole, stopped = uninterrupted_and_to_interrupt(tmp_path)
    signal_during_step(stopped.engine, after_step=7)
    result = stopped.engine.fit(stopped.train, stopped.val)
    assert (result.stop_reason, result.epochs, stopped.engine.global_step) == (StopReason.INTERRUPTED, 1, 8)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # fit gave the signals back
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert (state["engine"]["global_step"], state["batcher"]) == (8, {"seed": 0, "epoch": 1, "position": 3})

    resumed = build_run(tmp_path / "part", *EXACT, "trainer.resume=auto")
    resumed.engine.fit(resumed.train, resumed.val)
    assert_same_parameters_and_metrics(resumed, whole)


def test_a_stop_signal_after_the_epoch_s_last_step_stops_once_the_epoch_is_validated_and_saved(tmp_path):
    whole, stopped = uninterrupted_and_to_interrupt(tmp_path)
    train_epoch = stopped.engine.train_epoch

    def epoch_then_signal(batcher):
        loss = train_epoch(batcher)  # the loop has looked for signals for the last time
        os.kill(os.getpid(), signal.SIGTERM)
        return loss

    stopped.engine.train_epoch = epoch_then_signal
    result = stopped.engine.fit(stopped.train, stopped.val)
    assert (result.stop_reason, result.epochs, len(stopped.metrics_log.rows)) == (StopReason.INTERRUPTED, 1, 1)
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert (state["engine"]["epoch"], state["batcher"]) == (1, {"seed": 0, "epoch": 1, "position": 0})

    resumed = build_run(tmp_path / "part", *EXACT, "trainer.resume=auto")
    resumed.engine.fit(resumed.train, resumed.val)
    assert_same_parameters_and_metrics(resumed, whole)


def test_a_stop_signal_arriving_during_the_processes_agreement_is_kept_for_the_next(monkeypatch):
    """Under torchrun the processes agree at each step on whether any received a stop signal (an all-reduce). One
    that arrives while the exchange runs is this process's for the next agreement; it was overwritten, and lost."""
    requests = StopRequests()

    def exchange_while_sigterm_arrives(number, device):
        requests.received = signal.SIGTERM  # (what the handler does)
        return number  # every process had none when the exchange began

    monkeypatch.setattr(distributed, "max_over_ranks", exchange_while_sigterm_arrives)
    agreement = StopAgreement(requests, SimpleNamespace(distributed=True), torch.device("cpu"), every_n_steps=1)
    assert agreement.signal_received() is False  # not at this step: the others do not know yet
    assert requests.received is signal.SIGTERM
    monkeypatch.setattr(distributed, "max_over_ranks", lambda number, device: number)
    assert agreement.signal_received() is True  # the next step, all stop
