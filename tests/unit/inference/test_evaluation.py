"""`evaluate`: a checkpoint's test metrics again, exactly as the run's test computed them, and a classifier's
confusion matrix (printed, evaluation.json, confusion.png). Runs are trained in-process, once per module.
(tests/e2e/test_checkpoint_commands.py runs the command.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.commands import NO_GPU
from helpers.files import PNG_SIGNATURE
from helpers.trained_runs import best_checkpoint, compose_command, mistake, summary_test_metrics, train_tiny_runs
from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.data import build_data
from trainer.inference.evaluation import evaluate, main
from trainer.inference.trained_model import load


RUNS = {
    "multiclass": ("data=csv",),  # three classes named by text labels: blue, green, red
    "binary": ("data=moons", "data.n_samples=300"),  # one logit (bce)
    "regression": ("data=regression", "data.n_samples=300"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, offline_data_sets) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("runs"), RUNS)


@pytest.mark.parametrize("name", RUNS)
def test_evaluate_reproduces_the_run_s_test_metrics_exactly(runs, name):
    evaluation = evaluate(load(compose_command("evaluate", f"ckpt_path={best_checkpoint(runs[name])}", "device=cpu")))
    assert evaluation.test == summary_test_metrics(runs[name])  # float equality: the same code on the same device


@pytest.mark.parametrize("name, class_names", [("multiclass", ["blue", "green", "red"]), ("binary", ["0", "1"])])
def test_the_confusion_matrix_counts_every_test_sample_once_and_its_diagonal_is_the_accuracy(runs, name,
                                                                                          class_names):
    trained = load(compose_command("evaluate", f"ckpt_path={best_checkpoint(runs[name])}", "device=cpu"))
    evaluation = evaluate(trained)
    counts = np.asarray(evaluation.confusion_matrix)
    test_labels = build_data(trained.config.data).test[1].numpy()

    assert evaluation.class_names == class_names
    assert counts.shape == (len(class_names), len(class_names))
    assert counts.sum() == evaluation.samples == len(test_labels)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(test_labels, minlength=len(class_names)))
    assert np.float32(np.trace(counts) / counts.sum()) == np.float32(evaluation.test["accuracy"])


def test_evaluate_prints_and_writes_the_metrics_the_matrix_and_confusion_png(runs, capsys):
    run_dir = runs["multiclass"]
    main(compose_command("evaluate", f"ckpt_path={best_checkpoint(run_dir)}", "device=cpu"))
    out = capsys.readouterr().out

    folder = run_dir / "evaluation" / "best"
    written = json.loads((folder / "evaluation.json").read_text())
    assert written["test"] == summary_test_metrics(run_dir)
    assert written["class_names"] == ["blue", "green", "red"]
    assert np.asarray(written["confusion_matrix"]).sum() == written["samples"]
    assert (folder / "confusion.png").read_bytes().startswith(PNG_SIGNATURE)
    assert f"test metrics of {best_checkpoint(run_dir)}" in out
    assert f"  accuracy  {written['test']['accuracy']:.4f}" in out
    header, *rows = out.split("confusion matrix (rows: true class, columns: predicted class)\n")[1].splitlines()[:4]
    assert header.split() == ["blue", "green", "red"]
    assert [[int(n) for n in row.split()[1:]] for row in rows] == written["confusion_matrix"]


def test_regression_has_metrics_only_and_output_dir_puts_them_elsewhere(runs, tmp_path, capsys):
    run_dir = runs["regression"]
    main(compose_command("evaluate", f"ckpt_path={best_checkpoint(run_dir)}", "device=cpu",
                         f"output_dir={tmp_path / 'report'}"))
    written = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert written["test"] == summary_test_metrics(run_dir)
    assert written["confusion_matrix"] is None
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == ["evaluation.json"]
    assert "confusion matrix" not in capsys.readouterr().out


def test_moved_data_files_are_found_through_data_path(runs, tmp_path):
    run_dir = runs["multiclass"]
    moved = tmp_path / "moved.csv"
    shutil.copy(load(compose_command("evaluate", f"ckpt_path={best_checkpoint(run_dir)}")).config.data.path, moved)
    trained = load(compose_command("evaluate", f"ckpt_path={best_checkpoint(run_dir)}", f"data.path={moved}",
                                   "device=cpu"))
    assert trained.config.data.path == str(moved)
    assert evaluate(trained).test == summary_test_metrics(run_dir)


# (the overrides after ckpt_path, with {run} and {tmp} for the run directory and a scratch folder; the key, the
# value as the message shows it, a part of what is allowed)
MISTAKES = [
    (["ckpt_path=???"], "ckpt_path", "'???'", "(a value is required)"),
    (["ckpt_path={tmp}/none.pt"], "ckpt_path", "'{tmp}/none.pt'", "a checkpoint file that exists"),
    (["ckpt_path={run}/summary.json"], "ckpt_path", "'{run}/summary.json'", "a readable checkpoint"),
    (["data.root={tmp}"], "data.root", "'{tmp}'", "null: the run's data (trainer.data.table.read_csv) has no root"),
    (["data.path={tmp}/none.csv"], "data.path", "'{tmp}/none.csv'", "a CSV file that exists"),
    (["device=tpu"], "device", "'tpu'", "one of auto, "),
    pytest.param(["device=cuda"], "device", "'cuda'", "(cuda is not available here)", marks=NO_GPU),
]


@pytest.mark.parametrize("overrides, key, value, allowed", MISTAKES,
                         ids=["no-ckpt", "missing-ckpt", "not-a-ckpt", "root-of-a-table", "moved-csv",
                              "unknown-device", "no-gpu"])
def test_mistakes_name_the_key_the_value_and_what_is_allowed(runs, tmp_path, overrides, key, value, allowed):
    run_dir = runs["multiclass"]
    filled = [o.format(run=run_dir, tmp=tmp_path) for o in overrides]
    message = mistake("evaluate", compose_command("evaluate", f"ckpt_path={best_checkpoint(run_dir)}", *filled))
    assert message.startswith(f"{key}: got {value.format(run=run_dir, tmp=tmp_path)}, expected ")
    assert allowed in message


def test_a_checkpoint_s_saved_folder_depth_does_not_choose_a_folder_above_a_non_run(runs, tmp_path):
    """A stranger's checkpoint saved with trainer.checkpoint.dir=x/y, kept in deep/x/y/: its report goes beside it,
    not two folders up, unless deep/ is a run directory."""
    state = load_checkpoint(best_checkpoint(runs["multiclass"]))
    state["config"]["trainer"]["checkpoint"]["dir"] = "x/y"
    shared = tmp_path / "deep" / "x" / "y" / "best.pt"
    save_checkpoint(state, shared)
    main(compose_command("evaluate", f"ckpt_path={shared}", "device=cpu"))
    assert (shared.parent / "evaluation" / "best" / "evaluation.json").is_file()
    assert not (tmp_path / "deep" / "evaluation").exists()


@pytest.mark.parametrize("engine", [5, {"epoch": "two"}, {"epoch": -1}], ids=["not-a-mapping", "text", "negative"])
def test_a_checkpoint_whose_counters_are_not_counts_is_refused_in_one_line(runs, tmp_path, engine):
    state = {**load_checkpoint(best_checkpoint(runs["multiclass"])), "engine": engine}
    save_checkpoint(state, tmp_path / "odd.pt")
    message = mistake("evaluate", compose_command("evaluate", f"ckpt_path={tmp_path / 'odd.pt'}"))
    assert message.startswith(f"ckpt_path: got '{tmp_path / 'odd.pt'}', expected a checkpoint train wrote (its engine "
                              f"counters are ")


def test_sizes_that_do_not_fit_the_weights_are_refused_before_any_memory_is_taken(runs, tmp_path):
    """hidden_sizes=[200000,200000] would take 160 GB to build: the meta device finds the misfit without it."""
    state = load_checkpoint(best_checkpoint(runs["multiclass"]))
    state["config"]["model"]["hidden_sizes"] = [200000, 200000]
    save_checkpoint(state, tmp_path / "huge.pt")
    message = mistake("evaluate", compose_command("evaluate", f"ckpt_path={tmp_path / 'huge.pt'}", "device=cpu"))
    assert message == (f"ckpt_path: got '{tmp_path / 'huge.pt'}', expected a checkpoint whose weights fit the model "
                       f"its config describes (hidden.0.linear.weight has shape (16, 4) in it, (200000, 4) in the "
                       f"model its config describes)")


def test_a_checkpoint_path_too_long_for_the_os_is_one_line(runs):
    too_long = "/tmp/" + "x" * 300 + ".pt"
    message = mistake("evaluate", compose_command("evaluate", f"ckpt_path={too_long}"))
    assert message.startswith(f"ckpt_path: got '{too_long}', expected the path of a checkpoint file that exists")

