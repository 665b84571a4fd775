import pickle

import pytest
import torch

from trainer.checkpoint import load_checkpoint, previous_path, save_checkpoint

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
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    assert RAN == []


def test_load_maps_tensors_to_the_requested_device(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint({"weight": torch.ones(2)}, path)
    assert load_checkpoint(path, map_location=torch.device("cpu"))["weight"].device == torch.device("cpu")
