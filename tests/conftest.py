"""Shared test helpers: compose the real configs from configs/ (as `train` does) and shrink them to run fast;
write stand-ins, in the real file formats, for the data sets this machine cannot download; run `train` itself
in this process, where a test needs many runs and not a fresh process for each."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import subprocess
import sys
import textwrap
import traceback
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from trainer import cli
from trainer.config import config_dir
from trainer.data.formats import write_cifar10, write_mnist

# A few epochs of small batches: enough for a loss to move, short enough for hundreds of runs in the suite. Drawing
# curves.png takes longer than such a run trains: test_curves asks for it.
SHRINK = ("trainer.max_epochs=3", "trainer.early_stopping.patience=null", "trainer.curves=false")

# Every `train` the suite starts, in a subprocess or in this process, takes one torch thread, as one_torch_thread
# below does: its models are tiny, and trainer.training.threads would otherwise measure the other pytest worker's
# load, so that the thread count (and with it the last bits of a result) would depend on the moment.
os.environ["OMP_NUM_THREADS"] = "1"

STAND_IN_ROOT = Path()
"""Where `offline_data_sets` wrote the stand-ins; DATA_DIR points there for the whole session."""
CSV_CLASSES = ("blue", "green", "red")
IMAGE_CLASSES = {"blue": (30, 30, 220), "green": (30, 200, 30), "red": (220, 30, 30)}
"""write_image_folder's classes and their colours (RGB); as grey images, their brightness differs too."""


def compose_config(*overrides: str, shrink: bool = True) -> DictConfig:
    """The config `train OVERRIDES...` would run, composed from the real YAML; `data=csv` and `data=parquet` read
    the stand-in table unless the overrides name another."""
    if "data=csv" in overrides and not any(o.startswith("data.path=") for o in overrides):
        overrides = (*overrides, f"data.path={STAND_IN_ROOT / 'table.csv'}", "data.target=colour")
    if "data=parquet" in overrides and not any(o.startswith("data.path=") for o in overrides):
        overrides = (*overrides, f"data.path={STAND_IN_ROOT / 'table.parquet'}", "data.target=colour")
    if "data=image_folder" in overrides and not any(o.startswith("data.path=") for o in overrides):
        overrides = (*overrides, f"data.path={STAND_IN_ROOT / 'image_folder'}")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*(SHRINK if shrink else ()), *overrides])


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's metrics.csv rows without their `seconds`, the one column that differs between equal runs."""
    with open(run_dir / "metrics.csv", newline="") as file:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(file)]


def write_csv_table(path: Path, num_rows: int = 300, seed: int = 0) -> Path:
    """Three Gaussian blobs in 4 features with text labels (CSV_CLASSES) in the column `colour`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CSV_CLASSES), num_rows)
    features = rng.normal(0, 1, (num_rows, 4)) + 3 * np.eye(4)[labels]
    lines = ["a,b,colour,c,d"] + [f"{x[0]:.5f},{x[1]:.5f},{CSV_CLASSES[k]},{x[2]:.5f},{x[3]:.5f}"
                                  for x, k in zip(features, labels)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet_table(path: Path, csv_path: Path) -> Path:
    """The CSV table as Parquet, the same rows and columns (pyarrow imported here: the suite's other tests check
    that `train` itself does not import it before a table is read)."""
    import pyarrow.csv
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.csv.read_csv(csv_path), path)
    return path


def write_image_folder(root: Path, per_class: int = 40, size: tuple[int, int] = (8, 8), grey: bool = False,
                       image_format: str = "PNG", seed: int = 0) -> Path:
    """root/<class>/<n>.<format>: IMAGE_CLASSES, each a colour (or a brightness, grey) with noise, so that a small
    model tells them apart; Pillow writes them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    suffix = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "WEBP": "webp"}[image_format]
    for name, colour in IMAGE_CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            noise = rng.normal(0, 25, (*size, 3))  # (H, W, 3)
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels.mean(axis=2).astype(np.uint8) if grey else pixels)
            image.save(root / name / f"{n:03d}.{suffix}", image_format)
    return root


@pytest.fixture(scope="session", autouse=True)
def offline_data_sets(tmp_path_factory):
    """MNIST, Fashion-MNIST and CIFAR-10 stand-ins that torchvision's own classes read from DATA_DIR (the image
    configs' default root), a table for data=csv and data=parquet, and a folder of PNGs for data=image_folder
    (decoded into a cache under this session's XDG_CACHE_HOME, not the user's)."""
    from torchvision.datasets import CIFAR10

    global STAND_IN_ROOT
    STAND_IN_ROOT = tmp_path_factory.mktemp("data")
    write_mnist(STAND_IN_ROOT)
    write_mnist(STAND_IN_ROOT, name="FashionMNIST", seed=1)
    write_cifar10(STAND_IN_ROOT)
    write_csv_table(STAND_IN_ROOT / "table.csv")
    write_parquet_table(STAND_IN_ROOT / "table.parquet", STAND_IN_ROOT / "table.csv")
    write_image_folder(STAND_IN_ROOT / "image_folder")
    import matplotlib.font_manager  # noqa: F401  (builds the font cache where it is missing, before any command)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_DIR", str(STAND_IN_ROOT))
        # matplotlib keeps its font cache where it was, not in the session's empty XDG_CACHE_HOME: a command that
        # drew the first figure of a session would print "Matplotlib is building the font cache" among its lines.
        patch.setenv("MPLCONFIGDIR", matplotlib.get_cachedir())
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        # torchvision checks the real CIFAR-10 files' MD5 sums; a stand-in passes only its existence check.
        for split in ("train_list", "test_list"):
            patch.setattr(CIFAR10, split, [[name, None] for name, _ in getattr(CIFAR10, split)])
        patch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
        yield STAND_IN_ROOT


def options(group: str) -> list[str]:
    """Every option of a config group, as `train --help` lists them."""
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The suite's models are tiny: on a 2-core machine one thread is many times faster than two that contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def backend_settings_put_back():
    """A run sets torch's float32 matmul precision and cuDNN autotuning for the whole process (trainer.backends):
    each test starts from torch's defaults."""
    import torch

    precision, benchmark = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    yield
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory that is neither the repository nor the run directory."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def train_in_this_process(capfd, monkeypatch):
    """`train ARGS` (or `evaluate`, `predict`: command=) run inside this process, as the command itself would run (a
    fresh process costs seconds of Python, torch and Hydra start-up): the exit code, stdout and stderr come back as
    subprocess.run's. Python warnings are added to stderr, as a process prints them; Hydra's logging handlers and
    global state, the environment, the working directory and torch's deterministic mode (trainer.deterministic) are
    put back afterwards, so that one call leaves nothing behind for the next."""
    def run(*args: str, cwd: Path, command: str = "train") -> subprocess.CompletedProcess:
        loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                          if isinstance(logger, logging.Logger))]
        before = {logger: (logger.level, logger.handlers[:], logger.propagate, logger.disabled) for logger in loggers}
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        capfd.readouterr()
        with (monkeypatch.context() as patch, mock.patch.dict(os.environ),
              warnings.catch_warnings(record=True) as caught):
            warnings.simplefilter("always")
            for hidden_by_default in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", hidden_by_default)
            os.environ.pop("HYDRA_FULL_ERROR", None)  # as run_command leaves it: train sets it itself
            patch.chdir(cwd)
            patch.setattr(sys, "argv", [command, *args])
            try:
                getattr(cli, command)()
                code = 0
            except SystemExit as exit:
                code = exit.code or 0
                if not isinstance(code, int):  # sys.exit(MESSAGE): printed, and exit code 1
                    print(code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter would print on its way out
                traceback.print_exc()
                code = 1
            finally:
                GlobalHydra.instance().clear()
                torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
                for logger in logging.Logger.manager.loggerDict.values():  # the loggers made during the run
                    if isinstance(logger, logging.Logger) and logger not in before:
                        before[logger] = (logging.NOTSET, [], True, False)
                for logger, (level, handlers, propagate, disabled) in before.items():
                    for handler in set(logger.handlers) - set(handlers):
                        with contextlib.suppress(Exception):
                            handler.close()  # Hydra's train.log handler: flushed and closed, as at a process's exit
                    logger.handlers[:] = handlers
                    logger.setLevel(level)
                    logger.propagate, logger.disabled = propagate, disabled
            for warning in caught:
                print(warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno,
                                             warning.line), end="", file=sys.stderr)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess([command, *args], code, out, err)

    return run


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """`folder` made a tmpfs of its own with mount's `options` (e.g. size=2m, or ro,size=1m), unmounted afterwards:
    a real full or read-only file system (root writes to any other folder). Skips the test where that needs root on
    Linux and this is not, or where mounting is not allowed."""
    import shutil

    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root on Linux")
    folder.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


HOLD_THE_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from trainer.run_directory import lock
    lock(Path(sys.argv[1]), "hydra.run.dir")
    print("locked", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def lock_holder():
    """Start a Python process that takes the lock of a run directory and holds it until it is killed (the lock's own
    tests, and `train` refused by it)."""
    processes = []

    def start(run_dir: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(run_dir)], stdout=subprocess.PIPE,
                                   text=True)
        processes.append(process)
        assert process.stdout.readline() == "locked\n"
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()
