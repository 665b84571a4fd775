import errno
import os
import sys
import threading
import warnings

import pytest
import torch

import trainer.training.checkpoint
from conftest import compose_config
from trainer.training.checkpoint import (FORMAT_VERSION, CheckpointNotSaved, DamagedCheckpoint, content_digest,
                                load_checkpoint, previous_path, save_checkpoint)
from trainer.run import train

RAN = []


def record(value):
    RAN.append(value)
    return value


class Payload:
    """An arbitrary object: unpickling it would run `record`."""

    def __reduce__(self):
        return record, ("unpickled code ran",)


def payload():
    return {
        "model": {"weight": torch.randn(3, 4), "bias": torch.arange(3)},
        "epoch": 7,
        "lr": 0.0025,
        "stop_reason": "patience",
        "history": [0.5, 0.25, {"nested": (1, 2)}],
        "scheduler": None,
        "flag": True,
    }


def assert_same(loaded, original):
    assert type(loaded) is type(original)
    if isinstance(original, torch.Tensor):
        assert loaded.dtype == original.dtype and torch.equal(loaded, original)
    elif isinstance(original, dict):
        assert loaded.keys() == original.keys()
        for key in original:
            assert_same(loaded[key], original[key])
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original)
        for a, b in zip(loaded, original):
            assert_same(a, b)
    else:
        assert loaded == original


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    original = payload()
    path = tmp_path / "best.pt"
    save_checkpoint(original, path)
    assert_same(load_checkpoint(path), original)


def test_creates_missing_folders(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    assert load_checkpoint(path) == {"epoch": 1}


def test_leaves_no_temp_file_behind(tmp_path):
    save_checkpoint(payload(), tmp_path / "last.pt")
    save_checkpoint({"epoch": 8}, tmp_path / "last.pt")  # over an existing file
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt") == {"epoch": 8}


def test_keep_previous_keeps_the_file_it_replaces_as_the_fallback(tmp_path):
    path = tmp_path / "last.pt"
    assert previous_path(path) == tmp_path / "last.previous.pt"
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # nothing to keep yet
    save_checkpoint({"epoch": 2}, path, keep_previous=True)
    save_checkpoint({"epoch": 3}, path, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.previous.pt", "last.pt"]
    assert (load_checkpoint(path), load_checkpoint(previous_path(path))) == ({"epoch": 3}, {"epoch": 2})


def test_a_failed_save_with_keep_previous_leaves_both_files_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    save_checkpoint({"epoch": 2}, path, keep_previous=True)

    def broken_save(obj, file, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 3}, path, keep_previous=True)
    monkeypatch.undo()
    assert (load_checkpoint(path), load_checkpoint(previous_path(path))) == ({"epoch": 2}, {"epoch": 1})


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_failed_save_keeps_the_previous_file_and_removes_the_temp_file(tmp_path, monkeypatch, error):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "weight": torch.ones(2)}, path)
    previous = path.read_bytes()

    def broken_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(error)):
        save_checkpoint({"epoch": 2, "weight": torch.zeros(2)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert path.read_bytes() == previous
    monkeypatch.undo()
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["weight"], torch.ones(2))


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(obj, file, *args, **kwargs):
        file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 1}, tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_arbitrary_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": Payload()}, path)
    RAN.clear()
    with pytest.raises(DamagedCheckpoint, match="Weights only load failed"):
        load_checkpoint(path)
    assert RAN == []


def test_load_maps_tensors_to_the_requested_device(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint({"weight": torch.ones(2)}, path)
    assert load_checkpoint(path, map_location=torch.device("cpu"))["weight"].device == torch.device("cpu")


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> bytes:
    """The bytes of a last.pt that a real (tiny) run wrote: weights, Adam's state, every RNG, the config."""
    run_dir = tmp_path_factory.mktemp("run")
    train(compose_config("data=xor", "model.hidden_sizes=[8]", "trainer.max_epochs=1"), run_dir)
    return (run_dir / "checkpoints" / "last.pt").read_bytes()


def test_every_flipped_bit_is_detected_or_changes_nothing_the_reader_gets(tmp_path, real_checkpoint):
    original = load_checkpoint_bytes(tmp_path / "good.pt", real_checkpoint)
    # 200 offsets spread evenly over the file, plus its first and last bytes; a different bit at each.
    offsets = sorted({0, len(real_checkpoint) - 1, *range(0, len(real_checkpoint), len(real_checkpoint) // 200)})
    assert len(offsets) >= 200
    detected = unchanged = 0
    for number, offset in enumerate(offsets):
        damaged = bytearray(real_checkpoint)
        damaged[offset] ^= 1 << (number % 8)
        try:
            loaded = load_checkpoint_bytes(tmp_path / "flipped.pt", bytes(damaged))
        except DamagedCheckpoint:
            detected += 1
            continue
        assert content_digest(loaded) == content_digest(original), f"byte {offset} changed what the reader gets"
        unchanged += 1
    assert detected + unchanged == len(offsets) and detected > len(offsets) // 2


def load_checkpoint_bytes(path, content: bytes) -> dict:
    path.write_bytes(content)
    return load_checkpoint(path)


def test_a_changed_tensor_under_a_stale_digest_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(payload(), path)
    state = torch.load(path, weights_only=True)
    state["model"]["weight"][0, 0] += 1e-6  # what a flipped bit in the tensor's bytes does
    torch.save(state, path)
    with pytest.raises(DamagedCheckpoint, match="does not match the digest written with it"):
        load_checkpoint(path)



def test_a_checkpoint_nested_deeper_than_python_recurses_is_damaged_not_a_traceback(tmp_path):
    """The unpickler nests without recursing, so a crafted file may hold lists deeper than hashing can follow."""
    path, deep = tmp_path / "best.pt", []
    for _ in range(5_000):
        deep = [deep]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # (torch.save recurses: the attacker's limit, not the reader's)
    try:
        torch.save({"format_version": FORMAT_VERSION, "digest": "0" * 64, "extra": deep}, path)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(DamagedCheckpoint, match="nests lists or dicts too deeply"):
        load_checkpoint(path)


def test_a_tensor_without_data_is_damaged_not_a_traceback(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format_version": FORMAT_VERSION, "digest": "0" * 64, "extra": torch.empty(3, device="meta")}, path)
    with pytest.raises(DamagedCheckpoint, match="a tensor of the meta device"):
        load_checkpoint(path)


@pytest.mark.parametrize("state, problem", [
    ({"model": {1: torch.ones(1)}, "engine": {}}, "its model's weights are not a mapping of names"),
    ({"model": [torch.ones(1)], "engine": {}}, "its model's weights are not a mapping of names"),
    ({"model": {"weight": [1.0]}, "engine": {}}, "its model's weights are not all tensors"),
    ({1: torch.ones(1)}, "its keys are not a mapping of names"),  # a bare state_dict, as init_from takes one
])
def test_weights_load_state_dict_cannot_take_are_damaged_not_a_traceback(tmp_path, state, problem):
    """load_state_dict fails on such weights with an AttributeError or TypeError: evaluate, predict, resume and
    init_from showed a traceback."""
    save_checkpoint(state, tmp_path / "best.pt")
    with pytest.raises(DamagedCheckpoint, match=problem):
        load_checkpoint(tmp_path / "best.pt")

def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "last.pt"
    os.mkfifo(fifo)
    errors = []
    reader = threading.Thread(target=lambda: errors.append(pytest.raises(DamagedCheckpoint, load_checkpoint, fifo)))
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO waited for a writer"
    assert "it is a FIFO, not a regular file" in str(errors[0].value)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(DamagedCheckpoint, match="it is a folder, not a regular file"):
        load_checkpoint(tmp_path)


def test_a_symlink_out_of_the_run_directory_is_refused_and_one_inside_it_followed(tmp_path):
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    save_checkpoint({"epoch": 1}, elsewhere / "last.pt")
    save_checkpoint({"epoch": 2}, run_dir / "kept" / "last.pt")
    (run_dir / "out.pt").symlink_to(elsewhere / "last.pt")
    (run_dir / "in.pt").symlink_to(run_dir / "kept" / "last.pt")
    with pytest.raises(DamagedCheckpoint, match=f"it is a symlink to {elsewhere / 'last.pt'}, outside its run"):
        load_checkpoint(run_dir / "out.pt", inside=run_dir)
    assert load_checkpoint(run_dir / "in.pt", inside=run_dir) == {"epoch": 2}
    assert load_checkpoint(run_dir / "out.pt") == {"epoch": 1}  # a path the user gives may lead anywhere


def test_a_checkpoint_of_a_newer_format_is_refused_naming_both_formats(tmp_path):
    path = tmp_path / "best.pt"
    newer = {"epoch": 1, "format_version": FORMAT_VERSION + 1}
    torch.save({**newer, "digest": content_digest(newer)}, path)
    with pytest.raises(DamagedCheckpoint, match=f"it has format {FORMAT_VERSION + 1}, written by a newer train"):
        load_checkpoint(path)


def test_a_format_1_checkpoint_is_upgraded_in_one_step(tmp_path):
    """train 0.1 wrote no format number, no digest, no skipped-step count and no data description."""
    path = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.ones(1)}, "engine": {"epoch": 3, "global_step": 30}, "version": "0.1.0"}, path)
    state = load_checkpoint(path)
    assert state["engine"] == {"skipped_steps": 0, "epoch": 3, "global_step": 30, "train_seconds": 0.0, "starts": 1}
    assert (state["epoch_progress"], state["data"], state["choices"]) == (None, None, None)


def test_a_format_2_checkpoint_counts_as_one_start_of_unknown_time(tmp_path):
    path = tmp_path / "last.pt"
    older = {"model": {"w": torch.ones(1)}, "engine": {"epoch": 3, "global_step": 30, "skipped_steps": 2},
             "format_version": 2}
    torch.save({**older, "digest": content_digest(older)}, path)
    assert load_checkpoint(path)["engine"] == {"epoch": 3, "global_step": 30, "skipped_steps": 2,
                                               "train_seconds": 0.0, "starts": 1}


def test_a_bare_state_dict_is_read_as_it_was_written(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, path)
    assert list(load_checkpoint(path)) == ["weight"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_write_the_file_system_refuses_names_the_file_and_the_error_and_leaves_the_checkpoints(
        tmp_path, monkeypatch, code):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    save_checkpoint({"epoch": 2}, path, keep_previous=True)

    def refused(self, data):
        self.error = OSError(code, os.strerror(code))
        raise self.error

    # torch wraps the error in its own
    monkeypatch.setattr(trainer.training.checkpoint._ErrorKeepingWriter, "write", refused)
    with pytest.raises(CheckpointNotSaved) as error:
        save_checkpoint({"epoch": 3, "weight": torch.zeros(1000)}, path, keep_previous=True)
    assert (error.value.errno, error.value.strerror, error.value.filename) == (code, os.strerror(code), str(path))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.previous.pt", "last.pt"]
    assert (load_checkpoint(path), load_checkpoint(previous_path(path))) == ({"epoch": 2}, {"epoch": 1})


def test_a_read_only_folder_names_the_checkpoint_not_its_temp_file(tmp_path, monkeypatch):
    """On a read-only file system even removing the temp file that could not be made fails: the checkpoint's name
    is what the user needs to see."""
    path = tmp_path / "best.pt"

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(type(path), "open", read_only)
    monkeypatch.setattr(type(path), "unlink", read_only)
    with pytest.raises(CheckpointNotSaved) as error:
        save_checkpoint({"epoch": 1}, path)
    assert (error.value.errno, error.value.filename) == (errno.EROFS, str(path))


def test_a_torchscript_file_is_refused_in_words_without_torch_s_warning(tmp_path):
    path = tmp_path / "best.torchscript"  # as train-export format=torchscript writes it
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), str(path))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.load warns that it "looks like a TorchScript archive", over 2 lines
        with pytest.raises(DamagedCheckpoint, match=r"^it is a TorchScript graph, as train-export format="
                                                    r"torchscript writes, which torch\.jit\.load runs: not a "
                                                    r"checkpoint$"):
            load_checkpoint(path)
