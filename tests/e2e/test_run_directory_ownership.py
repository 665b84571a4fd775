"""A run directory has one owner, as `train` keeps it: one process writes it at a time (a lock), a new run never
writes over another run's records or the user's files, and its name may hold any character a folder's name can.

Most runs here are `train` in this process (conftest's train_in_this_process); two resumes started together are
`train` processes of their own. (tests/unit/test_run_directory.py holds the lock's own tests.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import metrics_rows
from helpers.commands import assert_succeeded
from helpers.files import snapshot
from pausing_model import MODEL, TrainProcess, wait_until
from trainer.run_directory import LOCK_NAME


XOR = ("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=2", "trainer.curves=false")
"""A run of a second or so: xor needs neither scikit-learn nor torchvision."""


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command prints, after checking that it exited with 2 and printed nothing else."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- one process at a time --------------------------------------------------------------------------------------

def test_two_resumes_started_together_in_one_directory_one_trains_and_the_other_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    # Both pause at their 5th step, should they get that far: the one that holds the lock does, the other must be
    # refused before it trains, while the first is still training.
    args = (*XOR, "trainer.max_epochs=3", MODEL, "trainer.resume=auto", f"hydra.run.dir={run_dir}")
    first, second = (TrainProcess(*args, pause_at=5, folder=tmp_path / name) for name in ("first", "second"))
    both = (first, second)
    wait_until(lambda: all((p.folder / "paused").exists() or p.process.poll() is not None for p in both),
               "one process to pause and the other to end")
    for process in both:
        process.go_on()
    codes = [process.wait() for process in both]

    assert sorted(codes) == [0, 2], (first.stderr, second.stderr)
    winner, refused = both if codes[0] == 0 else both[::-1]
    pid = winner.process.pid
    assert refused.stderr.splitlines() == [
        f"train: error: hydra.run.dir: got '{run_dir}', expected a run directory no other process is using (train "
        f"pid {pid} holds it: wait for it to end, or use a new hydra.run.dir)"]
    assert [row["epoch"] for row in metrics_rows(run_dir)] == ["1", "2", "3"]
    assert not (run_dir / LOCK_NAME).exists()  # let go of, and removed, when the run ended


def test_a_run_refused_by_the_lock_changes_nothing_in_the_directory(tmp_path, train_in_this_process, lock_holder):
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"  # also the directory of the first job of a sweep in `sweep`
    assert_succeeded(train_in_this_process(*XOR, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    holder = lock_holder(run_dir)
    before = snapshot(run_dir)

    for args in [(*XOR, f"hydra.run.dir={run_dir}"),  # a second run
                 (*XOR, "trainer.resume=auto", f"hydra.run.dir={run_dir}"),
                 (*XOR, "trainer.resume=auto", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"),
                 ("-m", *XOR, "trainer.resume=auto", f"hydra.sweep.dir={sweep}")]:
        line = one_line(train_in_this_process(*args, cwd=tmp_path))
        assert f": got '{run_dir}', expected a run directory no other process is using (train pid {holder.pid} " \
               f"holds it: " in line, line
        assert snapshot(run_dir) == before


def test_a_lock_file_that_is_a_symlink_is_refused_and_never_written_through(tmp_path, train_in_this_process):
    run_dir, elsewhere = tmp_path / "run", tmp_path / "precious.txt"
    run_dir.mkdir()
    elsewhere.write_text("not to be truncated\n")
    (run_dir / LOCK_NAME).symlink_to(elsewhere)
    line = one_line(train_in_this_process(*XOR, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert line.startswith(f"train: error: hydra.run.dir: got '{run_dir}', expected a folder whose {LOCK_NAME} this "
                           f"process can open and write ("), line
    assert elsewhere.read_text() == "not to be truncated\n"


# --- never over another run's records ---------------------------------------------------------------------------

def earlier_run(overrides: tuple[str, ...]):
    def make(run_dir: Path, train_in_this_process) -> None:
        assert_succeeded(train_in_this_process(*XOR, *overrides, f"hydra.run.dir={run_dir}", cwd=run_dir.parent))
    return make


def users_files(*names: str):
    def make(run_dir: Path, train_in_this_process) -> None:
        run_dir.mkdir()
        for name in names:
            (run_dir / name).write_text("the user's own\n")
    return make


FOLDERS = {
    "a run whose checkpoints are elsewhere": (
        earlier_run(("trainer.checkpoint.dir=ckA",)),
        "(it holds .hydra, ckA, health.csv, metrics.csv and 2 more): use a new hydra.run.dir (trainer.resume=auto "
        "would not carry it on: its .hydra/config.yaml is another run's: trainer.checkpoint.dir is 'ckA' there, "
        "'checkpoints' here)",
        "(its .hydra/config.yaml is another run's: trainer.checkpoint.dir is 'ckA' there, 'checkpoints' here): use a "
        "new hydra.run.dir"),
    "an inspect run": (earlier_run(("trainer.inspect=true",)),
                       "(it holds .hydra, health.csv, inspect.json, train.log): use a new hydra.run.dir (trainer.resume=auto would "
                       "not carry it on: its .hydra/config.yaml is another run's: trainer.inspect is True there, "
                       "False here)",
                       "(its .hydra/config.yaml is another run's: trainer.inspect is True there, False here)"),
    "a find_lr run": (earlier_run(("trainer.find_lr=true", "trainer.lr_find.num_steps=12")),
                      "(it holds .hydra, lr_find.csv, lr_find.png, train.log): use a new hydra.run.dir (trainer.resume=auto "
                      "would not carry it on: its .hydra/config.yaml is another run's: trainer.find_lr is True "
                      "there, False here)",
                      "(its .hydra/config.yaml is another run's: trainer.find_lr is True there, False here)"),
    "the user's metrics.csv": (users_files("metrics.csv"), "(it holds metrics.csv): use a new hydra.run.dir",
                               "(it holds metrics.csv, but no checkpoint to resume from and no readable "
                               ".hydra/config.yaml): use a new hydra.run.dir"),
    "the user's files": (users_files("notes.txt", "data.npy"), "(it holds data.npy, notes.txt): use a new "
                                                               "hydra.run.dir", "(it holds data.npy, notes.txt, but"),
}


def test_a_folder_of_a_run_stopped_while_it_was_built_points_to_resume_which_starts_it_again(tmp_path,
                                                                                           train_in_this_process):
    run_dir = tmp_path / "run"
    users_files("train.log")(run_dir, train_in_this_process)

    line = one_line(train_in_this_process(*XOR, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert line.endswith("(it holds train.log): trainer.resume=auto carries on the run there, or use a new "
                         "hydra.run.dir"), line
    assert_succeeded(train_in_this_process(*XOR, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))


@pytest.mark.parametrize("make, new_run, resumed", FOLDERS.values(), ids=FOLDERS.keys())
def test_a_folder_that_holds_records_not_this_run_s_is_refused_and_left_as_it_was(tmp_path, train_in_this_process,
                                                                                 make, new_run, resumed):
    run_dir = tmp_path / "run"
    make(run_dir, train_in_this_process)
    before = snapshot(run_dir)

    line = one_line(train_in_this_process(*XOR, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert line.startswith(f"train: error: hydra.run.dir: got '{run_dir}', expected an empty folder for a new "
                           f"run "), line
    assert new_run in line, line
    line = one_line(train_in_this_process(*XOR, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert line.startswith(f"train: error: hydra.run.dir: got '{run_dir}', expected an empty folder, or the run "
                           f"directory of the run that trainer.resume=auto carries on "), line
    assert resumed in line, line
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("inside", ["checkpoints", "."], ids=["its-checkpoints", "the-run-directory-itself"])
def test_a_checkpoint_dir_in_another_run_s_directory_is_refused_and_that_run_left_as_it_was(
        tmp_path, train_in_this_process, inside):
    other = tmp_path / "other"
    assert_succeeded(train_in_this_process(*XOR, f"hydra.run.dir={other}", cwd=tmp_path))
    before = snapshot(other)
    target = other / inside
    refused = train_in_this_process(*XOR, "trainer.resume=auto", f"trainer.checkpoint.dir={target}",
                                    f"hydra.run.dir={tmp_path / 'mine'}", cwd=tmp_path)
    assert one_line(refused) == (f"train: error: trainer.checkpoint.dir: got '{target}', expected a folder of this "
                                 f"run's own, not one in {other}, another run's directory")
    assert snapshot(other) == before


def test_checkpoints_in_a_folder_of_their_own_beside_the_run_are_kept_there(tmp_path, train_in_this_process):
    assert_succeeded(train_in_this_process(*XOR, f"trainer.checkpoint.dir={tmp_path / 'scratch' / 'ck'}",
                                           f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path))
    assert (tmp_path / "scratch" / "ck" / "last.pt").is_file()


def test_the_root_folder_is_refused_before_anything_is_written(tmp_path, train_in_this_process):
    before = sorted(os.listdir("/"))
    line = one_line(train_in_this_process(*XOR, "hydra.run.dir=/", cwd=tmp_path))
    assert line.startswith("train: error: hydra.run.dir: got '/', expected an empty folder for a new run (it holds ")
    assert sorted(os.listdir("/")) == before


def test_a_sweep_job_directory_holding_the_user_s_files_is_refused(tmp_path, train_in_this_process):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    users_files("notes.txt")(sweep / "0", train_in_this_process)
    before = snapshot(sweep / "0")
    line = one_line(train_in_this_process("-m", *XOR, f"hydra.sweep.dir={sweep}", cwd=tmp_path))
    assert line == (f"train: error: hydra.sweep.dir: got '{sweep / '0'}', expected an empty folder for a new run (it "
                    f"holds notes.txt): use a new hydra.sweep.dir")
    assert snapshot(sweep / "0") == before  # (Hydra writes the sweep's multirun.yaml above it before any job)


def test_resume_auto_carries_on_a_run_stopped_while_it_was_being_built(tmp_path, train_in_this_process):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "train.log").write_text("loading the data...\n")  # all a run killed before its first epoch leaves
    assert_succeeded(train_in_this_process(*XOR, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert len(metrics_rows(run_dir)) == 2


def test_a_run_killed_while_it_first_wrote_health_csv_carries_on(tmp_path, train_in_this_process):
    """health.csv is written through a buffer: a run killed inside its first write, or on a disk that filled up,
    leaves it empty (no header) or with a torn last row."""
    run_dir = tmp_path / "run"
    args = (*XOR, "trainer.health.every_n_steps=1", "trainer.resume=auto", f"hydra.run.dir={run_dir}")
    assert_succeeded(train_in_this_process(*args, cwd=tmp_path))
    for epochs, torn in ((3, ""), (4, "step,name,grad_norm\n1,layers.0.weight,0.5\n2,layer")):
        (run_dir / "health.csv").write_text(torn)
        result = train_in_this_process(*args, f"trainer.max_epochs={epochs}", cwd=tmp_path)
        assert_succeeded(result)
        assert "resumed from" in result.stdout
        rows = (run_dir / "health.csv").read_text().splitlines()
        assert rows[0].startswith("step,name,") and all(row.count(",") == rows[0].count(",") for row in rows)


DAMAGED = {
    "summary.json not JSON": ("summary.json", "{'epochs': 2,"),
    "summary.json of other types": ("summary.json", '{"stop_reason": ["max_epochs"], "epochs": "two", '
                                                    '"monitor": 1, "best_value": "low"}'),
    "summary.json nested deep": ("summary.json", "[" * 100_000),
    "config.yaml with a !!python tag": (".hydra/config.yaml", "seed: !!python/object/apply:os.system "
                                                              "['touch {evidence}']\n"),
    "config.yaml not YAML": (".hydra/config.yaml", "seed: [1,\n"),
}


@pytest.mark.parametrize("name, text", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_finished_run_s_damaged_records_are_not_believed_and_it_carries_on_from_its_checkpoint(
        tmp_path, train_in_this_process, name, text):
    run_dir, evidence = tmp_path / "run", tmp_path / "code-ran"
    args = (*XOR, "trainer.resume=auto", f"hydra.run.dir={run_dir}")  # the same command twice: a sweep's job
    assert_succeeded(train_in_this_process(*args, cwd=tmp_path))
    (run_dir / name).write_text(text.replace("{evidence}", str(evidence)))

    result = train_in_this_process(*args, cwd=tmp_path)
    assert_succeeded(result)
    assert "Logging error" not in result.stderr
    assert "finished before" not in result.stdout
    assert "resumed from" in result.stdout
    assert not evidence.exists()


# --- names ------------------------------------------------------------------------------------------------------

NAME = "run 1, lr=0.1 $HOME it's \"ünïcode\""


def test_a_run_directory_named_with_any_character_works_quoted(tmp_path, train_in_this_process):
    run_dir = tmp_path / NAME
    quoted = "'" + str(run_dir).replace("'", "\\'") + "'"
    assert_succeeded(train_in_this_process(*XOR, f"hydra.run.dir={quoted}", cwd=tmp_path))
    assert len(metrics_rows(run_dir)) == 2
    assert_succeeded(train_in_this_process(*XOR, "trainer.resume=auto", f"hydra.run.dir={quoted}", cwd=tmp_path))


@pytest.mark.parametrize("name", ["a,b", "it's", 'a"b', "a=b", "été"])
def test_a_run_directory_name_the_grammar_cannot_read_unquoted_is_refused_saying_how_to_quote_it(
        tmp_path, train_in_this_process, name):
    run_dir = tmp_path / name
    line = one_line(train_in_this_process(*XOR, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert line.startswith(f"train: error: hydra.run.dir: got {str(run_dir)!r}, expected a value Hydra's override "
                           f"grammar can read: to pass it as one string, quote it whole, as hydra.run.dir="), line
    suggested = line.split(", as ")[1].removesuffix(" (inside your shell's own quotes)")
    assert list(tmp_path.iterdir()) == []

    assert_succeeded(train_in_this_process(*XOR, suggested, cwd=tmp_path))  # the suggestion works
    assert len(metrics_rows(run_dir)) == 2


def test_an_interpolation_in_the_run_directory_that_cannot_be_resolved_or_kept_is_one_line(tmp_path,
                                                                                           train_in_this_process):
    line = one_line(train_in_this_process(*XOR, f"hydra.run.dir={tmp_path}/a${{nope}}", cwd=tmp_path))
    assert line == (f"train: error: hydra.run.dir: got '{tmp_path}/a${{nope}}', expected a path whose ${{...}} "
                    f"interpolations resolve (Interpolation key 'nope' not found)")
    line = one_line(train_in_this_process(*XOR, f"hydra.run.dir={tmp_path}/a\\${{nope}}", cwd=tmp_path))  # escaped
    assert line == (f"train: error: hydra.run.dir: got '{tmp_path}/a${{nope}}', expected a path without ${{ in it "
                    f"(Hydra would read it as an interpolation again when it names the log file)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_a_run_directory_name_too_long_for_the_system_is_refused_naming_the_limit(tmp_path, train_in_this_process,
                                                                                  key):
    folder = tmp_path / ("x" * 300) / "run"
    line = one_line(train_in_this_process(*(["-m"] if "sweep" in key else []), *XOR, f"{key}={folder}", cwd=tmp_path))
    assert line == (f"train: error: {key}: got '{folder}', expected a path whose folder names are at most "
                    f"{os.pathconf(tmp_path, 'PC_NAME_MAX')} bytes long (this system's limit; one here is 300)")
    assert list(tmp_path.iterdir()) == []
