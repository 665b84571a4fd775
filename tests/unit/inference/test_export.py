"""`train-export`: a checkpoint's model as NAME.safetensors (the weights, no pickle) and NAME.json (the rest of what
the checkpoint says), which `evaluate` and `predict` take in its place: the same figures and predictions as from the
checkpoint. Runs are trained in-process, once per module. (tests/e2e/test_checkpoint_commands.py runs the commands,
and gives them damaged pairs.)"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import conftest
from helpers.trained_runs import best_checkpoint, compose_command, export_best, exported, train_tiny_runs
from trainer.training.checkpoint import load_checkpoint
from trainer.inference.evaluation import evaluate
from trainer.inference.export import write_together
from trainer.inference.prediction import predict
from trainer.inference.trained_model import load

RUNS = {"classes": ("data=csv",), "values": ("data=regression", "data.n_samples=300")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, offline_data_sets) -> dict[str, Path]:
    """Each run's best.pt, exported beside it (best.safetensors and best.json) as `train-export ckpt_path=...` does."""
    return export_best(train_tiny_runs(tmp_path_factory.mktemp("runs"), RUNS))


def test_the_pair_holds_the_checkpoint_s_weights_and_what_rebuilds_the_model_around_them(runs):
    checkpoint = load_checkpoint(best_checkpoint(runs["classes"]))
    weights = exported(runs["classes"])
    described = json.loads(weights.with_suffix(".json").read_text())

    assert described == {"format_version": 1, "config": checkpoint["config"], "choices": checkpoint["choices"],
                         "data": checkpoint["data"], "epoch": checkpoint["engine"]["epoch"],
                         "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    with safe_open(str(weights), framework="pt") as tensors:
        assert tensors.metadata() == {"format": "trainer", "format_version": "1"}
        assert sorted(tensors.keys()) == sorted(checkpoint["model"])
        for name, tensor in checkpoint["model"].items():
            assert torch.equal(tensors.get_tensor(name), tensor)


@pytest.mark.parametrize("name", RUNS)
def test_evaluate_on_the_pair_gives_exactly_the_checkpoint_s_test_metrics(runs, name):
    from_checkpoint, from_pair = (evaluate(load(compose_command("evaluate", f"ckpt_path={path}", "device=cpu")))
                                  for path in (best_checkpoint(runs[name]), exported(runs[name])))
    assert dataclasses.asdict(from_pair) == dataclasses.asdict(from_checkpoint)  # the matrix too, for classes


def test_predict_on_the_pair_gives_exactly_the_checkpoint_s_predictions(runs):
    rows = conftest.STAND_IN_ROOT / "table.csv"
    from_checkpoint, from_pair = (predict(load(compose_command("predict", f"ckpt_path={path}", f"input={rows}",
                                                               "device=cpu")), rows)
                                  for path in (best_checkpoint(runs["classes"]), exported(runs["classes"])))
    assert len(from_pair) == 300
    assert from_pair == from_checkpoint


# (a way to damage a copy of the pair, a part of what the one line says)


# (the file whose write the disk refuses, the OS error); export writes the weights first, then the JSON



def test_a_pair_with_the_longest_name_a_folder_takes_is_written(tmp_path):
    """The temp files' names are no longer than the files' own: a 255-byte name (the usual limit) is written."""
    weights, described = tmp_path / ("a" * 243 + ".safetensors"), tmp_path / ("a" * 243 + ".json")

    write_together({weights: b"weights", described: b"{}"})

    assert (weights.read_bytes(), described.read_bytes()) == (b"weights", b"{}")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([weights.name, described.name])


def test_the_pair_and_the_folder_it_is_renamed_into_are_synced_to_disk(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: (synced.append(os.fstat(descriptor)), real_fsync(descriptor)))
    folder = tmp_path / "shared"

    write_together({folder / "digits.safetensors": b"weights", folder / "digits.json": b"{}"})

    assert sum(stat.S_ISREG(each.st_mode) for each in synced) == 2
    assert [each.st_ino for each in synced if stat.S_ISDIR(each.st_mode)] == [folder.stat().st_ino]
