"""The commands that read a checkpoint, as a user runs them: `evaluate` and `predict` from another directory, and
`train-export`, whose pair (NAME.safetensors and NAME.json) `evaluate` and `predict` take in a checkpoint's place
and believe only as far as a checkpoint: the same figures and predictions, and one line, exit 2, for a pair that is
missing its JSON, has weights altered since, or names code nobody trusted. The commands run as console scripts, or
in this process (conftest's train_in_this_process); their runs are trained in-process, once per module.
(tests/unit/inference/ holds evaluate's, predict's and export's own tests.)"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

import conftest
from helpers.commands import assert_succeeded, run_command
from helpers.trained_runs import (TABLE_ROWS, best_checkpoint, export_best, exported, raw_table_rows,
                                  summary_test_metrics, train_tiny_runs)
from trainer.training.checkpoint import load_checkpoint, save_checkpoint

RUNS = {"classes": ("data=csv",), "values": ("data=regression", "data.n_samples=300")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, offline_data_sets) -> dict[str, Path]:
    """Each run's best.pt, exported beside it (best.safetensors and best.json) as `train-export ckpt_path=...` does."""
    return export_best(train_tiny_runs(tmp_path_factory.mktemp("runs"), RUNS))


# --- evaluate ---------------------------------------------------------------------------------------------------

EVALUATE = shutil.which("evaluate", path=str(Path(sys.executable).parent))
"""The console script installed next to this Python."""


def test_the_evaluate_command_runs_from_another_directory_and_refuses_in_one_line(runs, tmp_path, elsewhere):
    assert EVALUATE, f"no `evaluate` console script next to {sys.executable}: is the package installed?"
    run_dir = runs["classes"]
    result = run_command([EVALUATE, f"ckpt_path={best_checkpoint(run_dir)}", "device=cpu",
                          f"output_dir={tmp_path / 'report'}"], elsewhere)
    assert_succeeded(result)
    assert json.loads((tmp_path / "report" / "evaluation.json").read_text())["test"] == summary_test_metrics(run_dir)
    for name, value in summary_test_metrics(run_dir).items():
        assert f"  {name:<8}  {value:.4f}" in result.stdout
    assert list(elsewhere.iterdir()) == [], "evaluate wrote into the working directory"

    refused = run_command([EVALUATE, f"ckpt_path={tmp_path / 'none.pt'}"], elsewhere)
    assert refused.returncode == 2
    assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"evaluate: error: ckpt_path: got '{tmp_path / 'none.pt'}', expected ")


# --- predict ----------------------------------------------------------------------------------------------------

PREDICT = shutil.which("predict", path=str(Path(sys.executable).parent))
"""The console script installed next to this Python."""


def test_the_predict_command_prints_each_row_s_class_and_writes_the_output_csv(runs, tmp_path, elsewhere):
    assert PREDICT, f"no `predict` console script next to {sys.executable}: is the package installed?"
    header, rows = raw_table_rows()
    (tmp_path / "rows.csv").write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
    result = run_command([PREDICT, f"ckpt_path={best_checkpoint(runs['classes'])}", f"input={tmp_path / 'rows.csv'}",
                          "top_k=2", "device=cpu", f"output={tmp_path / 'predicted.csv'}"], elsewhere)
    assert_succeeded(result)

    with open(tmp_path / "predicted.csv", newline="") as file:
        written = list(csv.DictReader(file))
    assert [row["sample"] for row in written] == [f"row {number}" for number in range(1, TABLE_ROWS + 1)]
    lines = result.stdout.splitlines()
    for row, line in zip(written, lines):
        probabilities = {name: float(row[name]) for name in conftest.CSV_CLASSES}
        top = sorted(probabilities, key=probabilities.get, reverse=True)[:2]
        assert row["predicted"] == top[0]
        assert line == f"{row['sample']}  {top[0]}  ({top[0]} {probabilities[top[0]]:.3f}, " \
                       f"{top[1]} {probabilities[top[1]]:.3f})"
    assert lines[-1] == f"written to {tmp_path / 'predicted.csv'}"
    assert list(elsewhere.iterdir()) == [], "predict wrote into the working directory"


# --- train-export, and the pair it writes -----------------------------------------------------------------------

def copied_pair(run_dir: Path, folder: Path) -> Path:
    """The run's exported pair copied into `folder`, for a test to damage: the copy's .safetensors."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(exported(run_dir).with_suffix(suffix), folder / f"model{suffix}")
    return folder / "model.safetensors"


def test_the_commands_export_and_take_the_pair_elsewhere(runs, tmp_path, train_in_this_process):
    checkpoint, shared = best_checkpoint(runs["classes"]), tmp_path / "shared" / "classes.safetensors"
    result = train_in_this_process(f"ckpt_path={checkpoint}", f"output={shared}", cwd=tmp_path, command="export")
    assert_succeeded(result)
    assert result.stdout == (f"exported {checkpoint} (epoch 2) to {shared} and {shared.with_suffix('.json')}\n")
    assert sorted(path.name for path in shared.parent.iterdir()) == ["classes.json", "classes.safetensors"]

    rows = conftest.STAND_IN_ROOT / "table.csv"
    for command, args in (("evaluate", [f"output_dir={tmp_path / 'report'}"]), ("predict", [f"input={rows}"])):
        from_pair, from_checkpoint = (train_in_this_process(f"ckpt_path={path}", "device=cpu", *args, cwd=tmp_path,
                                                            command=command) for path in (shared, checkpoint))
        assert_succeeded(from_pair)
        assert from_pair.stdout == from_checkpoint.stdout.replace(str(checkpoint), str(shared))


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_the_command_exports_a_graph_checked_against_pytorch_in_one_line(runs, tmp_path, train_in_this_process,
                                                                         format):
    checkpoint, graph = best_checkpoint(runs["classes"]), tmp_path / f"model.{format}"
    result = train_in_this_process(f"ckpt_path={checkpoint}", f"format={format}", f"output={graph}", cwd=tmp_path,
                                   command="export")
    assert_succeeded(result)
    assert result.stderr == ""  # neither the exporter's reports nor torch's warnings on TorchScript
    assert re.fullmatch(rf"exported {re.escape(str(checkpoint))} \(epoch 2\) to {re.escape(str(graph))}; its outputs "
                        rf"differ from PyTorch's by at most [0-9.e-]+\n", result.stdout)
    assert sorted(path.name for path in tmp_path.iterdir()) == [graph.name]


def with_json(weights: Path, change) -> Path:
    """The pair with `change` applied to its JSON (a function of the parsed object, or bytes that replace the file)."""
    described = weights.with_suffix(".json")
    if isinstance(change, bytes):
        described.write_bytes(change)
    else:
        described.write_text(json.dumps(change(json.loads(described.read_text()))))
    return weights


def flipped_byte(weights: Path, offset: int) -> Path:
    content = bytearray(weights.read_bytes())
    content[offset] ^= 0x01
    weights.write_bytes(bytes(content))
    return weights


def set_in(described: dict, dotted: str, value) -> dict:
    *parents, key = dotted.split(".")
    node = described
    for parent in parents:
        node = node[parent]
    node[key] = value
    return described


DAMAGED = {
    "weights-flipped-in-a-tensor": (lambda pair: flipped_byte(pair, -3),
                                    "its SHA-256 is not the one model.json gives"),
    "weights-flipped-in-the-header": (lambda pair: flipped_byte(pair, 20),
                                      "its SHA-256 is not the one model.json gives"),
    "no-json": (lambda pair: pair.with_suffix(".json").unlink() or pair, "there is no file model.json beside it"),
    "json-not-json": (lambda pair: with_json(pair, b'{"format_version": 1,'), "model.json is not JSON"),
    "json-a-list": (lambda pair: with_json(pair, lambda described: [described]), "model.json: not an object of"),
    "json-epoch-text": (lambda pair: with_json(pair, lambda described: set_in(described, "epoch", "2")),
                        "model.json: its epoch is '2', not an integer >= 0, or null"),
    "json-newer-format": (lambda pair: with_json(pair, lambda described: set_in(described, "format_version", 9)),
                          "model.json: format 9, written by a newer export"),
    "json-value-train-refuses": (lambda pair: with_json(pair, lambda d: set_in(d, "config.optimizer.lr", -1.0)),
                                 "a checkpoint whose config train would run (optimizer.lr: got -1.0"),
    "json-class-missing": (lambda pair: with_json(pair, lambda d: set_in(d, "data.class_names", ["blue", "red"])),
                           "its data class_names is ['blue', 'red'], not 3 names"),
    "json-std-zero": (lambda pair: with_json(pair, lambda d: set_in(d, "data.features.std", [0.0, 1.0, 1.0, 1.0])),
                      "its data features is"),
}


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_pair_is_refused_in_one_line_naming_ckpt_path(runs, tmp_path, train_in_this_process, damage):
    make, reason = DAMAGED[damage]
    pair = make(copied_pair(runs["classes"], tmp_path))
    refused = train_in_this_process(f"ckpt_path={pair}", "device=cpu", f"output_dir={tmp_path / 'report'}",
                                    cwd=tmp_path, command="evaluate")
    assert refused.returncode == 2
    assert refused.stdout == "" and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"evaluate: error: ckpt_path: got '{pair}', expected ")
    assert reason in refused.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_pair_whose_json_names_a_gadget_is_refused_and_runs_nothing(runs, tmp_path, train_in_this_process, command):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file\n")
    gadget = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    pair = with_json(copied_pair(runs["classes"], tmp_path), lambda described: set_in(described, "config.loss", gadget))
    extra = [f"input={conftest.STAND_IN_ROOT / 'table.csv'}"] if command == "predict" else []
    refused = train_in_this_process(f"ckpt_path={pair}", "device=cpu", *extra, cwd=tmp_path, command=command)
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"{command}: error: ckpt_path: got '{pair}', expected a checkpoint that names "
                                     f"only trusted code (its loss._target_ is 'builtins.open'")
    assert victim.read_text() == "the user's file\n"


def test_export_reads_the_checkpoint_as_evaluate_does_and_refuses_a_gadget(runs, tmp_path, train_in_this_process):
    state = load_checkpoint(best_checkpoint(runs["classes"]))
    state["config"]["model"] = {"_target_": "builtins.exec", "source": "open('marker', 'w')"}
    crafted = tmp_path / "crafted.pt"
    save_checkpoint(state, crafted)
    refused = train_in_this_process(f"ckpt_path={crafted}", cwd=tmp_path, command="export")
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"train-export: error: ckpt_path: got '{crafted}', expected a checkpoint that "
                                     f"names only trusted code (its model._target_ is 'builtins.exec'")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["crafted.pt"]


REFUSED_WRITES = [(".safetensors", errno.EROFS), (".json", errno.ENOSPC)]


@pytest.mark.parametrize("refused_suffix, code", REFUSED_WRITES)
def test_a_refused_write_is_one_line_naming_the_file_and_leaves_the_previous_pair(runs, tmp_path, monkeypatch,
                                                                                  train_in_this_process,
                                                                                  refused_suffix, code):
    checkpoint, shared = best_checkpoint(runs["classes"]), tmp_path / "classes.safetensors"
    copied_pair(runs["values"], tmp_path)  # a previous export there, of another model
    for suffix in (".safetensors", ".json"):
        (tmp_path / f"model{suffix}").rename(shared.with_suffix(suffix))
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    real_fsync, synced = os.fsync, []

    def fsync_on_a_refusing_disk(descriptor: int) -> None:
        synced.append(descriptor)
        if len(synced) == [suffix for suffix, _ in REFUSED_WRITES].index(refused_suffix) + 1:
            raise OSError(code, os.strerror(code))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_on_a_refusing_disk)
    failed = train_in_this_process(f"ckpt_path={checkpoint}", f"output={shared}", cwd=tmp_path, command="export")
    assert failed.returncode == 1
    assert failed.stderr == (f"train-export: error: could not write {shared.with_suffix(refused_suffix)}: "
                             f"{os.strerror(code)} ({errno.errorcode[code]})\n")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before  # no temp file either


@pytest.fixture
def read_only_folder(tmp_path) -> Path:
    """A read-only tmpfs of its own."""
    with conftest.mounted_tmpfs(tmp_path / "read-only", "ro,size=1m") as folder:
        yield folder


def test_a_read_only_folder_is_one_line_naming_the_file(runs, read_only_folder, train_in_this_process):
    shared = read_only_folder / "classes.safetensors"
    failed = train_in_this_process(f"ckpt_path={best_checkpoint(runs['classes'])}", f"output={shared}",
                                   cwd=read_only_folder.parent, command="export")
    assert failed.returncode == 1
    assert failed.stderr == f"train-export: error: could not write {shared}: Read-only file system (EROFS)\n"


@pytest.mark.parametrize("override, key, allowed", [
    ("format=pdf", "format", "one of safetensors, onnx, torchscript"),
    ("output={tmp}/model.pt", "output", "the path of a .safetensors file to write"),
    ("output={tmp}/a-file/model.safetensors", "output", "a path in a folder ({tmp}/a-file is a file)"),
])
def test_export_mistakes_name_the_key_the_value_and_what_is_allowed(runs, tmp_path, train_in_this_process, override,
                                                                   key, allowed):
    (tmp_path / "a-file").write_text("")
    filled = override.format(tmp=tmp_path)
    refused = train_in_this_process(f"ckpt_path={best_checkpoint(runs['classes'])}", filled, cwd=tmp_path,
                                    command="export")
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"train-export: error: {key}: got '{filled.partition('=')[2]}', expected "
                                     f"{allowed.format(tmp=tmp_path)}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("format, output", [("torchscript", "model.torchscript"), ("onnx", "null")])
def test_export_refuses_to_write_over_the_checkpoint_it_reads(runs, tmp_path, train_in_this_process, format, output):
    checkpoint = tmp_path / f"model.{format}"  # a checkpoint named with the format's suffix: output names it again
    checkpoint.write_bytes(best_checkpoint(runs["classes"]).read_bytes())
    refused = train_in_this_process(f"ckpt_path={checkpoint}", f"format={format}", f"output={output}", cwd=tmp_path,
                                    command="export")
    assert refused.returncode == 2
    given = "None" if output == "null" else repr(output)
    assert refused.stderr == (f"train-export: error: output: got {given}, expected the path of a file other than the "
                              f"checkpoint it reads ({checkpoint})\n")
    assert checkpoint.read_bytes() == best_checkpoint(runs["classes"]).read_bytes()


def test_export_refuses_a_name_whose_json_is_another_file_and_replaces_a_pair_exported_before(runs, tmp_path,
                                                                                              train_in_this_process):
    summary = tmp_path / "summary.json"  # output=RUN_DIR/summary.safetensors: its JSON would be the run's summary
    summary.write_text('{"epochs": 3}\n')
    refused = train_in_this_process(f"ckpt_path={best_checkpoint(runs['classes'])}",
                                    f"output={tmp_path / 'summary.safetensors'}", cwd=tmp_path, command="export")
    assert refused.returncode == 2
    assert refused.stderr == (f"train-export: error: output: got '{tmp_path / 'summary.safetensors'}', expected a "
                              f"name whose .json is free or an exported pair's ({summary} is another file, which the "
                              f"pair's JSON would replace)\n")
    assert summary.read_text() == '{"epochs": 3}\n' and not (tmp_path / "summary.safetensors").exists()
    for _ in range(2):  # the second export replaces the first's pair
        assert_succeeded(train_in_this_process(f"ckpt_path={best_checkpoint(runs['classes'])}",
                                               f"output={tmp_path / 'model.safetensors'}", cwd=tmp_path,
                                               command="export"))


def test_an_output_name_too_long_for_the_folder_is_one_line(runs, tmp_path, train_in_this_process):
    output = tmp_path / ("a" * 300 + ".onnx")
    failed = train_in_this_process(f"ckpt_path={best_checkpoint(runs['classes'])}", "format=onnx", f"output={output}",
                                   cwd=tmp_path, command="export")
    assert failed.returncode == 1
    assert failed.stderr == f"train-export: error: could not write {output}: File name too long (ENAMETOOLONG)\n"
