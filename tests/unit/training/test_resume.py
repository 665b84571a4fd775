"""trainer.resume and trainer.init_from: a run continued from its checkpoint ends as if never interrupted, and a
checkpoint that does not fit the run is refused naming the setting. (tests/e2e/test_resumed_runs.py resumes real
`train` processes.)"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from helpers.trained_runs import SMALL, first_run
from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import ConfigError, validate
from trainer.run import build


def test_resume_auto_without_a_checkpoint_starts_from_the_beginning(run_dir):
    run = build(compose_config(*SMALL, "trainer.resume=auto"), run_dir)
    assert (run.engine.epoch, run.engine.global_step, run.train.position) == (0, 0, 0)


def test_resume_refuses_a_checkpoint_of_another_model_and_names_the_setting(tmp_path):
    (tmp_path / "a").mkdir()
    checkpoint = first_run(tmp_path / "a")
    with pytest.raises(ConfigError) as error:
        build(compose_config(*SMALL, "model.hidden_sizes=[64]", f"trainer.resume={checkpoint}"), tmp_path)
    assert str(error.value) == (f"trainer.resume: got '{checkpoint}', expected a checkpoint of this config "
                                f"(model.hidden_sizes is [32] there, [64] here)")


def test_resume_of_a_missing_file_is_refused_before_anything_runs():
    with pytest.raises(ConfigError) as error:
        validate(compose_config("trainer.resume=no/such.pt"))
    assert str(error.value) == ("trainer.resume: got 'no/such.pt', expected auto, or the path of a checkpoint "
                                "file that exists")


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    checkpoint = first_run(tmp_path / "a")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ConfigError, match=r"^trainer.resume: got '.*truncated.pt', expected a readable checkpoint"):
        build(compose_config(*SMALL, f"trainer.resume={truncated}"), tmp_path)


class CreatesAFile:
    """A pickled object whose unpickling would run code: here, create a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_its_payload_never_runs(tmp_path):
    (tmp_path / "a").mkdir()
    state = load_checkpoint(first_run(tmp_path / "a"))
    evidence = tmp_path / "payload-ran"
    malicious = tmp_path / "malicious.pt"
    with open(malicious, "wb") as file:
        torch.save({**state, "extra": CreatesAFile(evidence)}, file)
    with pytest.raises(ConfigError, match=r"^trainer.resume: got '.*malicious.pt', expected a readable checkpoint"):
        build(compose_config(*SMALL, f"trainer.resume={malicious}"), tmp_path)
    assert not evidence.exists()


def test_init_from_takes_the_model_weights_and_nothing_else(tmp_path):
    (tmp_path / "a").mkdir()
    checkpoint = first_run(tmp_path / "a")
    run = build(compose_config(*SMALL, f"trainer.init_from={checkpoint}"), tmp_path)
    saved = load_checkpoint(checkpoint)["model"]
    assert all(torch.equal(saved[name], value) for name, value in run.engine.model.state_dict().items())
    assert (run.engine.epoch, run.engine.global_step, run.metrics_log.rows) == (0, 0, [])


def test_init_from_a_checkpoint_of_another_shape_names_the_key(tmp_path):
    (tmp_path / "a").mkdir()
    checkpoint = first_run(tmp_path / "a")
    with pytest.raises(ConfigError, match=r"^trainer.init_from: got '.*last.pt', expected a checkpoint of this "
                                          r"model \(size mismatch"):
        build(compose_config("model.hidden_sizes=[64]", f"trainer.init_from={checkpoint}"), tmp_path)


TINY_MLP = ("data=sine", "model.hidden_sizes=[2]", "trainer.curves=false")
TINY_WEIGHTS = {"hidden.0.linear.weight": "[[1],[2]]", "hidden.0.linear.bias": "[3,4]", "head.weight": "[[5,6]]",
                "head.bias": "[7]"}


def init_weights(weights: dict[str, str]) -> str:
    """The override ++trainer.init_weights={name:values,...}: ++, as the names are new keys of the mapping (and
    one override per name would split it at the dots)."""
    return "++trainer.init_weights={" + ",".join(f"{name}:{values}" for name, values in weights.items()) + "}"


def test_init_weights_start_the_model_from_plain_values(tmp_path):
    run = build(compose_config(*TINY_MLP, init_weights(TINY_WEIGHTS)), tmp_path)
    weights = run.engine.model.state_dict()
    assert weights["hidden.0.linear.weight"].tolist() == [[1.0], [2.0]]
    assert weights["head.bias"].tolist() == [7.0]


@pytest.mark.parametrize("name, values, why", [
    ("head.bias", "[7,8]", "size mismatch"),
    ("head.bias", "null", None),  # a parameter left out
    ("head.bias", "[x]", None),
])
def test_init_weights_that_do_not_fit_the_model_name_the_key(tmp_path, name, values, why):
    given = {**TINY_WEIGHTS, name: values}
    given = {key: value for key, value in given.items() if value != "null"}
    with pytest.raises(ConfigError, match=r"^trainer.init_weights: got '\{...\}', expected a value for every "
                                          rf"parameter of this model, in its shape \({why or ''}"):
        build(compose_config(*TINY_MLP, init_weights(given)), tmp_path)


@pytest.mark.parametrize("values", ["[nan]", "[-inf]", "[1e39]"])  # 1e39 is inf in float32
def test_init_weights_that_are_not_finite_are_refused_naming_the_parameter(tmp_path, values):
    with pytest.raises(ConfigError, match=r"^trainer.init_weights: got '\{...\}', expected finite weights \(head.bias "
                                          r"holds nan or inf"):
        build(compose_config(*TINY_MLP, init_weights({**TINY_WEIGHTS, "head.bias": values})), tmp_path)


def test_a_checkpoint_of_plain_values_round_trips(tmp_path):
    save_checkpoint({"model": {}, "numbers": [1, 2.5, None, "text"]}, tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt")["numbers"] == [1, 2.5, None, "text"]


def test_a_run_that_had_stopped_early_stays_stopped_when_resumed(run_dir):
    # patience 1 with min_delta 10: epoch 2 cannot improve on epoch 1, so epoch 2 decides to stop.
    stopping = ("trainer.early_stopping.patience=1", "trainer.early_stopping.min_delta=10")
    first = build(compose_config(*SMALL, *stopping, "trainer.max_epochs=5"), run_dir)
    assert first.engine.fit(first.train, first.val).epochs == 2
    resumed = build(compose_config(*SMALL, *stopping, "trainer.max_epochs=5", "trainer.resume=auto"), run_dir)
    result = resumed.engine.fit(resumed.train, resumed.val)
    assert (result.stop_reason.value, result.epochs, resumed.engine.global_step) == (
        "early_stopping", 2, first.engine.global_step)


def two_epochs_with_a_fallback(run_dir: Path) -> tuple[Path, Path]:
    """A 2-epoch run: last.pt holds epoch 2, last.previous.pt epoch 1."""
    run = build(compose_config(*SMALL, "trainer.max_epochs=2"), run_dir)
    run.engine.fit(run.train, run.val)
    last = run_dir / "checkpoints" / "last.pt"
    return last, last.with_name("last.previous.pt")


def altered_after_it_was_saved(last: Path) -> None:
    """One weight changed under the digest written with it: what a flipped bit inside a tensor does."""
    state = torch.load(last, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name].view(-1)[0] += 1e-3
    torch.save(state, last)


DAMAGE = {
    "truncated": lambda last: last.write_bytes(last.read_bytes()[:1000]),
    "missing": lambda last: last.unlink(),  # a crash between keeping the previous file and renaming the new one
    "bit-flipped": altered_after_it_was_saved,
    "fifo": lambda last: (last.unlink(), os.mkfifo(last)),
    "folder": lambda last: (last.unlink(), last.mkdir()),
    "symlink-out-of-the-run": lambda last: (os.replace(last, last.parents[2] / "elsewhere.pt"),
                                            last.symlink_to(last.parents[2] / "elsewhere.pt")),
    "newer-format": lambda last: torch.save({"format_version": 99, "digest": "0"}, last),
    "pickled-object": lambda last: torch.save({"model": logging.getLogger("x")}, last),
    "not-a-dict": lambda last: torch.save([1, 2, 3], last),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_auto_falls_back_to_the_previous_last_pt_when_the_newest_is_damaged(run_dir, caplog, damage):
    caplog.set_level(logging.INFO)
    (run_dir / "run").mkdir()  # the run directory one level down, so that a symlink can lead out of it
    run_dir = run_dir / "run"
    last, previous = two_epochs_with_a_fallback(run_dir)
    DAMAGE[damage](last)
    resumed = build(compose_config(*SMALL, "trainer.max_epochs=2", "trainer.resume=auto"), run_dir)
    assert (resumed.engine.epoch, resumed.train.epoch, resumed.train.position) == (1, 1, 0)
    assert f"resumed from {previous}" in caplog.text
    if damage != "missing":
        assert f"trainer.resume: got '{last}', expected a readable checkpoint" in caplog.text
        assert f"falling back to {previous}" in caplog.text
        assert os.path.lexists(run_dir / "checkpoints" / "last.damaged.pt")  # set aside, not kept as the fallback
    resumed.engine.fit(resumed.train, resumed.val)
    assert load_checkpoint(previous)["engine"]["epoch"] == 1  # the good fallback it resumed from


def test_resume_auto_names_the_newest_file_when_no_checkpoint_can_be_read(run_dir):
    last, previous = two_epochs_with_a_fallback(run_dir)
    for path in (last, previous):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=rf"^trainer.resume: got '{last}', expected a readable checkpoint"):
        build(compose_config(*SMALL, "trainer.max_epochs=2", "trainer.resume=auto"), run_dir)


def test_a_new_run_in_the_directory_of_an_earlier_one_is_refused(run_dir):
    last = first_run(run_dir)
    before = last.read_bytes()
    with pytest.raises(ConfigError) as error:
        build(compose_config(*SMALL, "trainer.max_epochs=1"), run_dir)
    assert str(error.value) == (f"trainer.resume: got None, expected auto to carry on the run whose last.pt and "
                                f"best.pt are in {last.parent} (a new run there would overwrite them), or a new "
                                f"hydra.run.dir")
    assert last.read_bytes() == before


def test_a_checkpoint_without_what_resume_needs_is_refused_naming_what_is_missing(run_dir, tmp_path):
    state = load_checkpoint(first_run(run_dir))
    weights_only = tmp_path / "weights.pt"
    save_checkpoint({"model": state["model"], "config": state["config"]}, weights_only)
    with pytest.raises(ConfigError) as error:
        build(compose_config(*SMALL, f"trainer.resume={weights_only}"), tmp_path)
    assert str(error.value) == (f"trainer.resume: got '{weights_only}', expected a checkpoint written by train (this "
                                f"one has no optimizer, scheduler, scaler, early_stopping, engine, epoch_progress, "
                                f"batcher, rng, metrics)")


def test_a_checkpoint_of_version_0_1_0_without_the_newer_keys_resumes(run_dir):
    last = first_run(run_dir)
    state = load_checkpoint(last)
    del state["epoch_progress"], state["engine"]["skipped_steps"], state["choices"]
    torch.save(state, last)  # as train 0.1.0 wrote it: no format number, no digest
    resumed = build(compose_config(*SMALL, "trainer.max_epochs=2", "trainer.resume=auto"), run_dir)
    assert (resumed.engine.epoch, resumed.engine.nonfinite.skipped_steps, resumed.engine.progress) == (1, 0, None)


def test_resume_refuses_another_learning_rate_which_the_optimizer_state_would_override(run_dir):
    checkpoint = first_run(run_dir)
    with pytest.raises(ConfigError, match=r"\(optimizer.lr is 0.001 there, 0.01 here\)$"):
        build(compose_config(*SMALL, "optimizer.lr=0.01", f"trainer.resume={checkpoint}"), run_dir)


def test_resume_auto_refuses_a_run_directory_with_best_pt_but_no_last_pt(run_dir):
    checkpoints = first_run(run_dir, "trainer.checkpoint.save_last=false").parent
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best.pt"]
    with pytest.raises(ConfigError) as error:
        build(compose_config(*SMALL, "trainer.resume=auto"), run_dir)
    assert str(error.value) == (f"trainer.resume: got 'auto', expected a run directory with a last.pt to carry on "
                                f"from; {checkpoints} holds only best.pt, which a new run would overwrite: use a "
                                f"new hydra.run.dir (trainer.init_from=PATH starts it from those weights)")


def test_resume_from_another_run_s_file_into_a_directory_with_checkpoints_is_refused(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "own").mkdir()
    other = first_run(tmp_path / "other")
    own = first_run(tmp_path / "own", "seed=1")
    with pytest.raises(ConfigError) as error:
        build(compose_config(*SMALL, f"trainer.resume={other}"), tmp_path / "own")
    assert str(error.value) == (f"trainer.resume: got '{other}', expected a checkpoint of this run directory, or a new "
                                f"hydra.run.dir: {own.parent} holds last.pt and best.pt of another run, which this "
                                f"one would overwrite")
    resumed = build(compose_config(*SMALL, "seed=1", "trainer.max_epochs=2", f"trainer.resume={own}"), tmp_path / "own")
    assert resumed.engine.epoch == 1  # its own last.pt, named as a path, is fine


def test_a_new_run_is_refused_even_where_only_the_fallback_is_left(run_dir):
    last, _ = two_epochs_with_a_fallback(run_dir)
    last.unlink()
    (last.parent / "best.pt").unlink()
    with pytest.raises(ConfigError, match=r"the run whose last.previous.pt is in "):
        build(compose_config(*SMALL), run_dir)


def test_temp_files_left_by_a_killed_save_are_removed_when_the_run_carries_on(run_dir, caplog):
    caplog.set_level(logging.INFO)
    checkpoints = first_run(run_dir).parent
    stale = [checkpoints / ".last.pt.999999.tmp", checkpoints / ".best.pt.12.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (checkpoints / ".notes.tmp").write_text("not a save's")
    build(compose_config(*SMALL, "trainer.max_epochs=2", "trainer.resume=auto"), run_dir)
    assert sorted(path.name for path in checkpoints.iterdir() if path.name.startswith(".")) == [".notes.tmp"]
    assert all(f"removed {path}, left by a save that was killed part-way" in caplog.text for path in stale)

