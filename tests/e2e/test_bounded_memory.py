"""A set larger than the memory a process may take trains through the dataloader pipeline: LoaderBatcher serves
an epoch of a 1.6 GB memory-mapped uint8 set from a process whose allocations are capped well below that size.

The cap is RLIMIT_DATA: since Linux 4.7 it bounds a process's private writable memory (the heap, anonymous maps,
thread stacks), which any copy of the set would need, and not the pages of a file mapped read-only, which the
kernel may drop and read again. (RLIMIT_AS would count the file's mapping itself, so it cannot tell a copy from
a mapping.) The same process then tries to copy the set, to show that the cap holds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROW_SHAPE = (3, 64, 64)
"""A small colour photo per row: 12 KiB."""
NUM_ROWS = 130_000
"""1.6 GB in all."""
MARK_EVERY = 97
"""Rows whose first 8 bytes hold their own index, so that the batches show which rows they hold. The rest of the
file is a hole: written in a moment, and read like any other file (the kernel fills the pages it maps)."""
BUDGET = 128 * 2**20
"""What the process may allocate beyond what it had once torch was imported and the batcher built."""

EPOCH = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, torch
    from trainer.data import LoaderBatcher
    from trainer.data.batcher import RowsOf

    path, rows, budget, mark_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    shape = tuple(json.loads(sys.argv[5]))


    def status(pid="self"):
        lines = open(f"/proc/{pid}/status").read().splitlines()
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines)
                if k in ("VmData", "VmRSS", "VmHWM", "RssAnon", "RssFile")}


    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(rows, *shape))
    train_rows = np.setdiff1d(np.arange(rows), np.arange(0, rows, 10))  # a split: all rows but every 10th
    batcher = LoaderBatcher(RowsOf(mapped, train_rows), torch.from_numpy(train_rows), 512,
                            device=torch.device("cpu"), num_workers=2, pin_memory=False, seed=0)
    before = status()
    limit = before["VmData"] + budget
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))  # the workers, forked from here, inherit it

    served, marked = [], 0
    for x, y in batcher:
        served.append(y)
        first = x.reshape(len(x), -1)[:, :8].contiguous().view(torch.int64).squeeze(1)
        is_marked = y % mark_every == 0
        assert torch.equal(first[is_marked], y[is_marked]), "a batch holds other rows than its labels say"
        marked += int(is_marked.sum())
    workers = [status(worker.pid) for worker in batcher._loader._iterator._workers]
    batcher.close()
    served = torch.cat(served)
    try:
        copy = np.array(mapped)
        copied = True
    except MemoryError:
        copied = False
    print(json.dumps({"limit": limit, "before": before, "main": status(), "workers": workers, "served": len(served),
                      "distinct": len(torch.unique(served)), "expected": len(train_rows), "marked": marked,
                      "copied": copied}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA bounds mapped memory on Linux only")
def test_an_epoch_of_a_memory_mapped_set_larger_than_the_memory_limit(tmp_path):
    path = tmp_path / "images.u8"
    row_bytes = int(np.prod(ROW_SHAPE))
    size = NUM_ROWS * row_bytes
    with open(path, "wb") as file:
        file.truncate(size)
    marks = np.memmap(path, dtype=np.uint8, mode="r+", shape=(NUM_ROWS, row_bytes))
    marks[::MARK_EVERY, :8] = np.arange(0, NUM_ROWS, MARK_EVERY, dtype="<i8")[:, None].view(np.uint8)
    marks.flush()
    del marks

    result = subprocess.run([sys.executable, "-c", EPOCH, str(path), str(NUM_ROWS), str(BUDGET), str(MARK_EVERY),
                             json.dumps(ROW_SHAPE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    print(figures)
    assert figures["limit"] < size / 1.5  # the set is well beyond what the process may hold
    assert not figures["copied"]  # and the limit holds: a copy of the set is refused
    assert figures["served"] == figures["distinct"] == figures["expected"]  # every row of the split, once
    assert figures["marked"] > 1000
    # Every process's peak resident memory, file pages included (the workers inherit the main process's pages):
    # well below the set's size, and within the budget of what the main process held before the epoch.
    for process in (figures["main"], *figures["workers"]):
        assert process["VmHWM"] < size / 2
        assert process["VmHWM"] < figures["before"]["VmRSS"] + BUDGET
