"""A disk that fills up or refuses writes ends the run in one line naming the file and the OS error (exit code 1),
with every checkpoint whole and no temp file left; once space is freed, trainer.resume=auto finishes the run as
if the disk had never been full."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import trainer.training.checkpoint
import trainer.training.engine
from conftest import metrics_rows, mounted_tmpfs
from helpers.commands import assert_succeeded
from trainer.training.checkpoint import load_checkpoint

RUN = ("data=xor", "model.hidden_sizes=[64,64]", "trainer.max_epochs=3", "trainer.curves=false",
       "trainer.deterministic=true", "trainer.health.every_n_steps=null", "trainer.device=cpu")
ADVICE = "; the checkpoints written before it are whole: once it can write, trainer.resume=auto carries the run on"


def checkpoint_files(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((run_dir / "checkpoints").iterdir())}


@pytest.fixture
def uninterrupted(tmp_path, train_in_this_process) -> Path:
    run_dir = tmp_path / "uninterrupted"
    assert_succeeded(train_in_this_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    return run_dir


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_refused_checkpoint_write_ends_the_run_in_one_line_and_resume_finishes_it(
        tmp_path, train_in_this_process, monkeypatch, uninterrupted, code):
    run_dir, failing_save, before = tmp_path / "run", 3, {}  # epoch 1: best.pt, last.pt; epoch 2: best.pt, ...
    real_save, saves = trainer.training.engine.save_checkpoint, []

    def save_on_a_disk_that_fills(state, path, **options):
        saves.append(path)
        if len(saves) != failing_save:
            return real_save(state, path, **options)
        before.update(checkpoint_files(run_dir))
        with monkeypatch.context() as disk:
            disk.setattr(trainer.training.checkpoint._ErrorKeepingWriter, "write", refuse_write)
            return real_save(state, path, **options)

    def refuse_write(self, data):
        self.error = OSError(code, os.strerror(code))
        raise self.error

    monkeypatch.setattr(trainer.training.engine, "save_checkpoint", save_on_a_disk_that_fills)
    failed = train_in_this_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.strip() == (f"train: error: could not write {saves[-1]}: {os.strerror(code)} "
                                     f"({errno.errorcode[code]}){ADVICE}")
    assert checkpoint_files(run_dir) == before  # as they were, and no temp file
    monkeypatch.undo()

    assert_succeeded(train_in_this_process(*RUN, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert metrics_rows(run_dir) == metrics_rows(uninterrupted)
    finished, expected = load_checkpoint(run_dir / "checkpoints" / "last.pt"), load_checkpoint(
        uninterrupted / "checkpoints" / "last.pt")
    assert all(finished["model"][name].equal(expected["model"][name]) for name in expected["model"])


def test_a_disk_that_fills_between_the_first_best_pt_and_last_pt_leaves_a_run_that_resume_carries_on(
        tmp_path, train_in_this_process, monkeypatch, uninterrupted):
    """Epoch 1 writes best.pt, then last.pt: a run stopped between the two has its own best.pt and no last.pt."""
    run_dir, real_save = tmp_path / "run", trainer.training.engine.save_checkpoint

    def save_on_a_disk_that_fills(state, path, **options):
        if path.name == "last.pt":
            raise trainer.training.checkpoint.CheckpointNotSaved(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_save(state, path, **options)

    with monkeypatch.context() as disk:
        disk.setattr(trainer.training.engine, "save_checkpoint", save_on_a_disk_that_fills)
        failed = train_in_this_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert failed.stderr.strip().endswith(ADVICE) and failed.returncode == 1
    assert sorted(checkpoint_files(run_dir)) == ["best.pt"]

    assert_succeeded(train_in_this_process(*RUN, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert metrics_rows(run_dir) == metrics_rows(uninterrupted)


def test_a_disk_that_fills_while_the_run_s_config_is_saved_leaves_a_run_that_resume_carries_on(
        tmp_path, train_in_this_process, monkeypatch, uninterrupted):
    """A write cut short leaves the part that fitted: a .hydra/config.yaml cut short is another run's config."""
    run_dir, real_save = tmp_path / "run", OmegaConf.save

    def save_on_a_full_disk(config, path, **options):
        if "config.yaml" not in Path(path).name:
            return real_save(config, path, **options)
        text = OmegaConf.to_yaml(config)
        Path(path).write_text(text[:len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as disk:
        disk.setattr(OmegaConf, "save", save_on_a_full_disk)
        failed = train_in_this_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.strip() == (f"train: error: could not write {run_dir / '.hydra' / 'config.yaml'}: "
                                     f"{os.strerror(errno.ENOSPC)} (ENOSPC){ADVICE}")
    assert sorted(path.name for path in run_dir.iterdir()) == ["train.log"]

    assert_succeeded(train_in_this_process(*RUN, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert metrics_rows(run_dir) == metrics_rows(uninterrupted)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 2 MiB tmpfs of its own."""
    with mounted_tmpfs(tmp_path / "disk", "size=2m") as disk:
        yield disk


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on `disk`."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(free - leave, 0))
    return filler


def test_a_really_full_disk_ends_the_run_in_one_line_and_resume_finishes_it_once_space_is_freed(
        small_disk, tmp_path, train_in_this_process, uninterrupted):
    size = (uninterrupted / "checkpoints" / "last.pt").stat().st_size
    # Room for epoch 1's best.pt and last.pt and the small files, not for epoch 2's third checkpoint.
    filler = fill(small_disk, leave=int(2.5 * size) + 64 * 1024)
    run_dir = small_disk / "run"
    failed = train_in_this_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    line, = failed.stderr.strip().splitlines()
    assert line.startswith(f"train: error: could not write {run_dir}") and "No space left on device (ENOSPC)" in line
    written = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert written and not any(name.endswith(".tmp") for name in written)
    for name in written:
        load_checkpoint(run_dir / "checkpoints" / name)  # whole: the digest matches

    filler.unlink()
    assert_succeeded(train_in_this_process(*RUN, "trainer.resume=auto", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert metrics_rows(run_dir) == metrics_rows(uninterrupted)


@pytest.mark.parametrize("leave", [16, 24, 32, 48])
def test_a_disk_that_fills_at_any_moment_of_a_run_is_one_line_naming_the_file(small_disk, tmp_path,
                                                                              train_in_this_process, leave):
    """The more space is left, the later the run fills the disk: in .hydra/, health.csv, metrics.csv or a
    checkpoint. The OS error of a write or a close names no file: the line must still say which."""
    filler = fill(small_disk, leave=leave * 1024)
    run_dir = small_disk / "run"
    args = (*RUN, "trainer.health.every_n_steps=1", "model.hidden_sizes=[4]", f"hydra.run.dir={run_dir}")
    failed = train_in_this_process(*args, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    line, = failed.stderr.strip().splitlines()
    assert line.startswith(f"train: error: could not write {run_dir}/") and "(ENOSPC)" in line

    filler.unlink()
    assert_succeeded(train_in_this_process(*args, "trainer.resume=auto", cwd=tmp_path))


def test_a_read_only_run_directory_is_one_line_for_train_evaluate_and_predict(
        small_disk, tmp_path, train_in_this_process, uninterrupted):
    run_dir = small_disk / "run"
    assert_succeeded(train_in_this_process(*RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        resumed = train_in_this_process(*RUN, "trainer.max_epochs=4", "trainer.resume=auto",
                                        f"hydra.run.dir={run_dir}", cwd=tmp_path)
        evaluated = train_in_this_process(f"ckpt_path={run_dir / 'checkpoints' / 'best.pt'}", cwd=tmp_path,
                                          command="evaluate")
        rows = tmp_path / "rows.json"
        rows.write_text('{"x0": 1.0, "x1": 0.0}')
        predicted = train_in_this_process(f"ckpt_path={run_dir / 'checkpoints' / 'best.pt'}", f"input={rows}",
                                          f"output={small_disk / 'predictions.csv'}", cwd=tmp_path,
                                          command="predict")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    # train finds out before it starts, when it cannot lock the run directory: a mistake of the command line
    assert resumed.returncode == 2 and resumed.stderr.startswith(f"train: error: hydra.run.dir: got '{run_dir}'")
    assert len(resumed.stderr.strip().splitlines()) == 1 and "(Read-only file system)" in resumed.stderr
    for result, command in ((evaluated, "evaluate"), (predicted, "predict")):
        assert result.returncode == 1, result.stderr
        line, = result.stderr.strip().splitlines()
        assert line.startswith(f"{command}: error: could not write ") and "Read-only file system (EROFS)" in line
