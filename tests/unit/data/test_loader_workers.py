"""LoaderBatcher's worker processes: started once and kept for every epoch and evaluation, each epoch still in its own
seeded order (so a resumed run is exact), ended by `close` or at exit; and sets served from a memory-mapped file
without copying it. (tests/unit/data/test_batcher.py compares its batches with Batcher's;
tests/e2e/test_bounded_memory.py serves an epoch of a set larger than the memory its processes may take;
tests/e2e/test_dataloader_workers.py watches the processes of a real `train`.)"""

from __future__ import annotations

import functools
import gc
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config, metrics_rows
from helpers.batches import assert_same_batches, batches
from trainer.data import Batcher, DataDescription, DataSplits, LoaderBatcher, batchers
from trainer.data.batcher import RowsOf
from trainer.data.mapped_rows import ReplacedFile
from trainer.data.transforms import Augment, Normalize
from trainer.run import Run, build
from trainer.training.interrupts import ignore_stop_signals

CPU = torch.device("cpu")
IMAGES = torch.randint(1, 256, (40, 3, 5, 5), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
"""uint8 images whose label is their index."""


def note_start(folder: Path, worker_id: int) -> None:
    """A worker_init_fn: one file per worker process started, named by its process id; and, as `train`'s workers
    do, the stop signals ignored (SIGTERM included, so only the DataLoader's own shutdown ends a worker)."""
    (folder / str(os.getpid())).touch()
    ignore_stop_signals(worker_id)


def started(folder: Path) -> set[int]:
    return {int(path.name) for path in folder.iterdir()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a worker that ended was joined (reaped) by the DataLoader: its pid is gone
    except ProcessLookupError:
        return False
    return True


def pair(folder: Path, x=IMAGES, y=None, num_workers: int = 2, **options) -> tuple[LoaderBatcher, Batcher]:
    """A LoaderBatcher whose workers note their starts in `folder`, and the Batcher of the same samples."""
    folder.mkdir(exist_ok=True)
    y = torch.arange(len(x)) if y is None else y
    options = {"normalize": Normalize.fitted(IMAGES), "augment": Augment(crop_padding=2, horizontal_flip=True),
               **options}
    in_memory = x if isinstance(x, torch.Tensor) else torch.from_numpy(x.array[x.rows] if isinstance(x, RowsOf)
                                                                       else np.array(x))
    reference = Batcher(in_memory, y, 6, **options)
    loaded = LoaderBatcher(x, y, 6, device=CPU, num_workers=num_workers,
                           worker_init_fn=functools.partial(note_start, folder), **options)
    return loaded, reference


def test_the_workers_serve_every_epoch_and_evaluation_until_closed(tmp_path):
    train, train_reference = pair(tmp_path / "train", seed=3)
    val, val_reference = pair(tmp_path / "val", shuffle=False, augment=None)
    for _ in range(3):
        assert_same_batches(batches(train), batches(train_reference))
        assert_same_batches(batches(val), batches(val_reference))
    workers = started(tmp_path / "train") | started(tmp_path / "val")
    assert len(started(tmp_path / "train")) == len(started(tmp_path / "val")) == 2  # 3 epochs, 3 evaluations
    assert all(alive(pid) for pid in workers)

    train.close()
    val.close()
    assert not any(alive(pid) for pid in workers)
    train.close()  # a second close does nothing

    assert_same_batches(batches(train), batches(train_reference))  # a pass after close starts new workers
    assert len(started(tmp_path / "train")) == 4
    train.close()
    assert not any(alive(pid) for pid in started(tmp_path / "train"))


def test_a_batcher_collected_in_a_reference_cycle_ends_its_workers(tmp_path):
    """A run's objects refer to each other, so the garbage collector, not reference counting, frees a run that
    nothing closed. Its workers must end then (they ignore SIGTERM in `train`, so nothing else would end them)."""
    loaded, _ = pair(tmp_path)
    cycle = {"batcher": loaded}
    cycle["itself"] = cycle
    list(loaded)
    workers = started(tmp_path)
    assert len(workers) == 2 and all(alive(pid) for pid in workers)
    del loaded, cycle
    gc.collect()
    assert not any(alive(pid) for pid in workers)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pass_left_part_way_gives_way_to_the_rest_of_the_epoch_and_to_a_loaded_state(tmp_path, num_workers):
    """The batches the workers had fetched ahead for the abandoned pass are dropped, not served to the next."""
    loaded, reference = pair(tmp_path, seed=5, num_workers=num_workers)
    expected = [batches(reference), batches(reference)]
    first = batches(loaded, 2)
    assert_same_batches(first + batches(loaded), expected[0])
    assert_same_batches(batches(loaded, 1), expected[1][:1])
    loaded.load_state_dict({"seed": 5, "epoch": 0, "position": 4})  # a resume, with the workers running
    assert_same_batches(batches(loaded), expected[0][4:])
    assert_same_batches(batches(loaded), expected[1])
    loaded.close()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_serving_batches_draws_nothing_from_torch_s_global_generator(tmp_path, num_workers):
    """Dropout draws from it: a resumed run's draws must not depend on when the workers started."""
    loaded, _ = pair(tmp_path, num_workers=num_workers)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for _ in range(2):
        list(loaded)
    assert torch.equal(torch.get_rng_state(), before)
    loaded.close()


# --- memory-mapped sets ---------------------------------------------------------------------------------------

OFFSET = 16
"""Bytes before the images in the file (a header of the file's own)."""


def mapped_images(tmp_path: Path) -> np.memmap:
    path = tmp_path / "images.u8"
    with open(path, "wb") as file:
        file.write(b"h" * OFFSET + IMAGES.numpy().tobytes())
    return np.memmap(path, dtype=np.uint8, mode="r", offset=OFFSET, shape=tuple(IMAGES.shape))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_memory_mapped_set_and_a_split_of_it_serve_the_batches_of_their_copies_in_memory(tmp_path, num_workers):
    images = mapped_images(tmp_path)
    split = np.array([1, 2, 3, 5, 8, 13, 21, 34, 35, 36, 37, 38, 39])  # sorted, as build_data's splits are
    for x, y in ((images, None), (RowsOf(images, split), torch.from_numpy(split))):
        loaded, reference = pair(tmp_path / "workers", x=x, y=y, seed=2, num_workers=num_workers)
        assert len(loaded) == len(reference) and loaded.num_samples == len(x)
        for _ in range(2):
            assert_same_batches(batches(loaded), batches(reference))
        loaded.close()
    assert isinstance(loaded.x.array, np.memmap)  # served from the file, not from a copy


def test_a_memory_mapped_split_travels_to_a_spawned_worker_as_its_file_not_its_bytes(tmp_path):
    """Forked workers (Linux's default) share the mapping; spawned ones (macOS, Windows) unpickle the rows."""
    view = mapped_images(tmp_path)[7:]  # a view begins elsewhere in the file than its memmap
    rows = RowsOf(view, np.array([0, 4, 9]))
    sent = pickle.dumps(rows)
    assert len(sent) < 1000 < view.nbytes
    received = pickle.loads(sent)
    assert isinstance(received.array, np.memmap) and received.array.mode == "r"
    assert torch.equal(received.read(np.arange(3)), IMAGES[7:][[0, 4, 9]])

    in_memory = RowsOf(np.array(view), np.array([1]))  # an array of no file goes as its bytes
    assert torch.equal(pickle.loads(pickle.dumps(in_memory)).read(np.array([0])), IMAGES[8:9])


def test_a_spawned_worker_refuses_a_file_put_in_place_of_the_one_mapped(tmp_path):
    """Another run that rebuilds a cache renames its new images.npy onto the path this run mapped: a spawned
    worker, mapping the file again by its path, would read that file's rows at this run's offsets."""
    images = mapped_images(tmp_path)
    loaded = LoaderBatcher(RowsOf(images), torch.arange(len(images)), 40, device=CPU, num_workers=1, shuffle=False)
    replacement = tmp_path / "rebuilt.u8"
    replacement.write_bytes(b"h" * OFFSET + bytes(IMAGES.numel()))  # the same size: other images
    os.replace(replacement, images.filename)
    start_method = torch.multiprocessing.get_start_method(allow_none=True)
    torch.multiprocessing.set_start_method("spawn", force=True)
    try:
        with pytest.raises(ReplacedFile, match="images.u8 changed while this run was using it"):
            list(loaded)
    finally:
        loaded.close()
        torch.multiprocessing.set_start_method(start_method, force=True)


def test_a_run_s_batchers_serve_memory_mapped_splits_through_either_pipeline(tmp_path):
    """build_data's splits of a memory-mapped set: read per batch by the dataloader pipeline, read whole once by
    the device pipeline; the same batches either way."""
    images = mapped_images(tmp_path)
    parts = [np.arange(0, 28), np.arange(28, 34), np.arange(34, 40)]
    normalize = Normalize.fitted(IMAGES[:28])
    described = DataDescription(task="multiclass", input_shape=(3, 5, 5), num_classes=40, pixels=normalize)
    data = DataSplits(*[(RowsOf(images, rows), torch.from_numpy(rows)) for rows in parts], description=described,
                      augment=Augment(crop_padding=2, horizontal_flip=True))
    served = {}
    for pipeline in ("device", "dataloader"):
        cfg = OmegaConf.create({"pipeline": pipeline, "num_workers": 2, "pin_memory": False, "batch_size": 8,
                                "drop_last": False})
        run_batchers = batchers(cfg, data, torch.nn.Linear(1, 1), CPU, seed=4, eval_batch_size=4)
        served[pipeline] = [batches(batcher) for batcher in run_batchers for _ in range(2)]
        for batcher in run_batchers:
            batcher.close()
    for device_batches, loader_batches in zip(served["device"], served["dataloader"]):
        assert_same_batches(device_batches, loader_batches)


# --- a run resumed with persistent workers ----------------------------------------------------------------------

EXACT = ("model=dropout_net", "model.hidden_sizes=[16]", "data=moons", "data.n_samples=200", "data.batch_size=32",
         "scheduler=cosine", "trainer.deterministic=true", "trainer.max_epochs=2", "trainer.device=cpu",
         "data.pipeline=dataloader", "data.num_workers=2")
"""Dropout draws from torch's RNG and cosine steps every batch; 140 training samples make 5 batches an epoch."""


def fitted(run_dir: Path, *overrides: str) -> Run:
    run_dir.mkdir(exist_ok=True)
    run = build(compose_config(*EXACT, *overrides), run_dir)
    try:
        run.engine.fit(run.train, run.val)
    finally:
        for batcher in (run.train, run.val, run.test):
            batcher.close()
    return run


def test_a_run_resumed_mid_epoch_or_between_epochs_with_workers_ends_bit_identical(tmp_path, monkeypatch):
    """last.pt saved after every step; the files of steps 3 and 7 (mid-epoch) and 5 (the first epoch's end), each
    taken up by a fresh run whose workers start at its first pass, end as the run never stopped did."""
    import trainer.training.engine

    snapshots = []
    real_save = trainer.training.engine.save_checkpoint
    monkeypatch.setattr(trainer.training.engine, "save_checkpoint", lambda state, path, **options: (
        real_save(state, path, **options),
        snapshots.append(path.read_bytes()) if path.name == "last.pt" else None))
    whole = fitted(tmp_path / "whole", "trainer.checkpoint.every_n_steps=1")
    monkeypatch.undo()
    assert len(snapshots) == 10  # after steps 1-4, epoch 1 (step 5), steps 6-9, epoch 2 (the end)

    for step in (3, 5, 7):
        run_dir = tmp_path / f"resumed-{step}"
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(snapshots[step - 1])
        torch.manual_seed(12345)  # whatever the RNGs did since, the checkpoint's states must win
        resumed = fitted(run_dir, "trainer.checkpoint.every_n_steps=1", "trainer.resume=auto")
        for (name, expected), actual in zip(whole.engine.model.state_dict().items(),
                                            resumed.engine.model.state_dict().values()):
            assert torch.equal(expected, actual), (step, name)
        assert metrics_rows(run_dir) == metrics_rows(tmp_path / "whole")
