"""The bad-input table: each mistake ends `train` with exit code 2 and one line naming the key, the value and
what is allowed, and leaves the run directory exactly as it was, whether the mistake is caught before the run
starts or once it has (the data, a checkpoint): an earlier run's (its checkpoints, log, metrics and .hydra/) for a
command that carries it on, an empty folder for a new run.

The table runs `train` in this process (conftest's train_in_this_process): a fresh process for each of its cases
would cost the suite more than a minute of start-up. A few commands run the console script itself, end to end:
one mistake of each kind in the table, and the test of the folders a mistake leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.commands import NO_GPU, assert_succeeded, train
from helpers.files import snapshot
from trainer.training.checkpoint import load_checkpoint
from trainer.data.formats import write_mnist

EARLIER_RUN = ("data=xor", "model.hidden_sizes=[16]", "trainer.max_epochs=2", "trainer.curves=false")
"""The run whose directory every bad command below is pointed at; also the config of the runtime cases, so
that only the mistake differs. xor needs neither scikit-learn nor torchvision, so each case starts quickly."""


class CreatesAFile:
    """Unpickling this object would create a file: the evidence that a checkpoint's payload ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A finished run, and the broken files the table's commands name."""
    folder = tmp_path_factory.mktemp("bad-input")
    run = folder / "run"
    assert_succeeded(train(*EARLIER_RUN, f"hydra.run.dir={run}", cwd=folder))
    checkpoint = run / "checkpoints" / "last.pt"

    truncated = folder / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    malicious = folder / "malicious.pt"
    torch.save({**load_checkpoint(checkpoint), "extra": CreatesAFile(folder / "payload-ran")}, malicious)
    bad_csv = folder / "bad.csv"
    bad_csv.write_text("a,b,y\n1,2,0\nx,3,1\n")
    latin1_csv = folder / "latin1.csv"
    latin1_csv.write_bytes("a,y\n1,red\n2,rosé\n".encode("latin-1"))
    repeated_column_csv = folder / "repeated_column.csv"
    repeated_column_csv.write_text("a,b,a,y\n1,2,3,0\n4,5,6,1\n")
    one_class_csv = folder / "one_class.csv"
    one_class_csv.write_text("a,y\n" + "".join(f"{i},red\n" for i in range(30)))
    beyond_float32_csv = folder / "beyond_float32.csv"
    beyond_float32_csv.write_text("a,b,y\n1,2,0\n3,1e308,1\n")
    empty = folder / "empty"
    empty.mkdir()
    damaged = folder / "damaged"
    images = write_mnist(damaged) / "t10k-labels-idx1-ubyte"
    images.write_bytes(images.read_bytes()[:20])
    return {"run": str(run), "checkpoint": str(checkpoint), "truncated": str(truncated),
            "malicious": str(malicious), "bad_csv": str(bad_csv), "latin1_csv": str(latin1_csv),
            "repeated_column_csv": str(repeated_column_csv), "one_class_csv": str(one_class_csv),
            "beyond_float32_csv": str(beyond_float32_csv), "empty": str(empty), "damaged": str(damaged),
            "payload_ran": str(folder / "payload-ran")}


# (the command's arguments, the key, the value as the message shows it, a part of what is allowed). Arguments
# and value may name a file of `files` as {name}.
TABLE = [
    # a name that is not an option of its group
    (["model=foo"], "model", "'foo'", "one of dropout_net, mlp, resnet, transformer"),
    (["data=nope"], "data", "'nope'", "one of breast_cancer, cifar10, circles, csv,"),
    (["optimizer=adamax"], "optimizer", "'adamax'", "one of adagrad, adam, adamw, momentum, rmsprop, sgd"),
    (["scheduler=linear"], "scheduler", "'linear'", "one of cosine, none, plateau, step"),
    (["loss=hinge"], "loss", "'hinge'", "one of auto, bce, cross_entropy, l1, mse, smooth_l1"),
    # wrong types and ranges, group by group
    (["data.batch_size=abc"], "data.batch_size", "'abc'", "an integer >= 1"),
    (["data.val_fraction=1.5"], "data.val_fraction", "1.5", "a number in (0, 1)"),
    (["model.hidden_sizes=[0]"], "model.hidden_sizes", "[0]", "a list of integers >= 1"),
    (["model=dropout_net", "model.dropout=1.5"], "model.dropout", "1.5", "a number in [0, 1)"),
    (["model=transformer", "model.d_model=30"], "model.d_model", "30", "a multiple of model.num_heads=4"),
    (["loss.label_smoothing=1.0"], "loss.label_smoothing", "1.0", "a number in [0, 1)"),
    (["optimizer.lr=-1"], "optimizer.lr", "-1", "a number > 0"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas", "[0.9, 1.0]", "two numbers in [0, 1)"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma", "0", "a number in (0, 1]"),
    (["seed=-1"], "seed", "-1", "an integer >= 0"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs", "'abc'", "an integer"),
    (["trainer.max_epochs=0"], "trainer.max_epochs", "0", "an integer >= 1"),
    (["trainer.precision=8"], "trainer.precision", "'8'", "one of 32, bf16, 16"),
    pytest.param(["trainer.device=cuda"], "trainer.device", "'cuda'", "(cuda is not available here)", marks=NO_GPU),
    (["trainer.checkpoint.every_n_steps=0"], "trainer.checkpoint.every_n_steps", "0", "an integer >= 1, or null"),
    (["trainer.num_threads=0"], "trainer.num_threads", "0", "an integer >= 1, or null"),
    (["trainer.foo=1"], "trainer.foo", None, None),  # the key itself is the mistake
    (["+optimizer.bogus=1"], "optimizer.bogus", "1", "no such key: torch.optim.Adam takes params, lr, betas, eps"),
    (["scheduler=cosine", "+scheduler.bogus=1"], "scheduler.bogus", "1",
     "no such key: trainer.schedules.warmup_cosine takes optimizer, total_steps, warmup_steps, eta_min"),
    # settings that contradict each other
    (["scheduler=plateau", "scheduler.interval=step"], "scheduler.interval", "'step'",
     "epoch (reduce-on-plateau compares the monitored metric, measured once per epoch)"),
    (["data=regression", "trainer.early_stopping.monitor=val_accuracy"], "trainer.early_stopping.monitor",
     "'val_accuracy'", "one of val_loss, val_mse, val_rmse, val_r2 (what a regression set measures)"),
    (["loss=bce"], "loss", "'bce'", "one of cross_entropy for a multiclass set"),
    (["trainer.resume=auto", "trainer.checkpoint.save_last=false"], "trainer.resume", "'auto'",
     "null when checkpoint.save_last is false"),
    (["trainer.checkpoint.every_n_steps=5", "trainer.checkpoint.save_last=false"],
     "trainer.checkpoint.every_n_steps", "5", "null when checkpoint.save_last is false"),
    (["trainer.init_from={checkpoint}", "trainer.resume=auto"], "trainer.init_from", "'{checkpoint}'",
     "null when resume is set"),
    (["trainer.resume=no/such.pt"], "trainer.resume", "'no/such.pt'",
     "auto, or the path of a checkpoint file that exists"),
    (["data=csv", "data.path=nope.csv", "data.target=y"], "data.path", "'nope.csv'",
     "the path of a file that exists"),
    # a new run in the directory of another, refused before it starts
    ([*EARLIER_RUN, "hydra.run.dir={run}"], "hydra.run.dir", "'{run}'",
     "an empty folder for a new run (it holds .hydra, checkpoints, health.csv, metrics.csv and 2 more): "
     "trainer.resume=auto carries on the run there, or use a new hydra.run.dir"),
    # found once the run has started: checkpoints and data files
    ([*EARLIER_RUN, "model.hidden_sizes=[64]", "trainer.resume={checkpoint}"], "trainer.resume", "'{checkpoint}'",
     "a checkpoint of this config (model.hidden_sizes is [16] there, [64] here)"),
    ([*EARLIER_RUN, "model.hidden_sizes=[64]", "trainer.init_from={checkpoint}"], "trainer.init_from",
     "'{checkpoint}'", "a checkpoint of this model (size mismatch for head.weight: copying a param with shape "
     "torch.Size([1, 16]) from checkpoint, the shape in current model is torch.Size([1, 64])"),
    ([*EARLIER_RUN, "trainer.resume={truncated}"], "trainer.resume", "'{truncated}'",
     "a readable checkpoint of plain values and tensors (PytorchStreamReader failed reading zip archive"),
    ([*EARLIER_RUN, "trainer.resume={malicious}"], "trainer.resume", "'{malicious}'",
     "a readable checkpoint of plain values and tensors (Weights only load failed"),
    (["data=csv", "data.path={bad_csv}", "data.target=y"], "data.path", "'{bad_csv}'",
     "a finite number in every row of column 'a' (line 3 has 'x')"),
    (["data=csv", "data.path={bad_csv}", "data.target=label"], "data.target", "'label'",
     "a column of {bad_csv}: a, b, y"),
    (["data=csv", "data.path={latin1_csv}", "data.target=y"], "data.path", "'{latin1_csv}'",
     "a CSV file of UTF-8 text (line 3 has the byte 0xe9, which is not UTF-8 there: save the file as UTF-8)"),
    (["data=csv", "data.path={repeated_column_csv}", "data.target=y"], "data.path", "'{repeated_column_csv}'",
     "a header row that names each column once ('a' is column 1 and column 3)"),
    (["data=csv", "data.path={one_class_csv}", "data.target=y"], "data.target", "'y'",
     "a column whose values differ (every row of {one_class_csv} has 'red')"),
    (["data=csv", "data.path={beyond_float32_csv}", "data.target=y"], "data.path", "'{beyond_float32_csv}'",
     "a number within float32's range of ±3.4e+38 in every row of column 'b' (line 3 has '1e308')"),
    (["data=csv", f"data.path={'x' * 300}.csv", "data.target=y"], "data.path", f"'{'x' * 300}.csv'",
     "the path of a file that exists"),  # a name too long for the OS
    (["data=mnist", "data.root={empty}", "data.download=false"], "data.root", "'{empty}'",
     "a folder holding {empty}/MNIST/raw/{{train-images-idx3-ubyte,"),
    (["data=mnist", "data.root={damaged}", "data.download=false"], "data.root", "'{damaged}'",
     "a folder holding readable {damaged}/MNIST/raw/{{train-images-idx3-ubyte,"),
    (["data.task=binary"], "data.task", "'binary'", "multiclass: the labels have 10 classes"),
    (["data=xor", "model=resnet"], "model", "'ResNet'", "image data of shape (C, H, W)"),
]


BY_THE_CONSOLE_SCRIPT = (["model=foo"], [*EARLIER_RUN, "model.hidden_sizes=[64]", "trainer.resume={checkpoint}"])
"""The cases of TABLE that run `train` in a process of its own: one found as the config is composed, one once the
run has started and written to the log, which it then cuts back."""


def run_directory_for(args: list[str], files: dict[str, str], tmp_path: Path) -> Path:
    """The earlier run's directory for a command that carries that run on (trainer.resume) or names it; an empty
    folder for any other. A new run in the earlier run's directory would be refused as such before its own mistake
    is found (the row that names it)."""
    if any(arg.startswith(("trainer.resume=", "hydra.run.dir=")) for arg in args):
        return Path(files["run"])
    empty = tmp_path / "run"
    empty.mkdir()
    return empty


def assert_one_line_naming(stderr: str, key: str, value: str | None, allowed: str | None) -> None:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    if value is None:
        assert lines[0].startswith(f"train: error: {key}: no such setting"), lines[0]
    else:
        assert lines[0].startswith(f"train: error: {key}: got {value}, expected "), lines[0]
        assert allowed in lines[0], lines[0]


@pytest.mark.parametrize("args, key, value, allowed", TABLE,
                         ids=[" ".join(getattr(case, "values", case)[0]) for case in TABLE])
def test_a_bad_input_exits_2_with_one_line_and_leaves_the_run_directory_as_it_was(files, train_in_this_process,
                                                                                   tmp_path, args, key, value, allowed):
    run = run_directory_for(args, files, tmp_path)
    before = snapshot(run)
    command = train if args in BY_THE_CONSOLE_SCRIPT else train_in_this_process
    named = [] if any(arg.startswith("hydra.run.dir=") for arg in args) else [f"hydra.run.dir={run}"]
    result = command(*(arg.format(**files) for arg in args), *named, cwd=run.parent)

    assert result.returncode == 2, result.stderr
    assert_one_line_naming(result.stderr, key, value and value.format(**files), allowed and allowed.format(**files))
    assert "Traceback" not in result.stdout
    assert snapshot(run) == before
    assert not Path(files["payload_ran"]).exists()


@pytest.mark.parametrize("args", [["optimizer.lr=-1"], ["data=xor", "model=resnet"]],
                         ids=["before the run", "once it started"])
def test_a_bad_input_leaves_no_folder_behind(tmp_path, train_in_this_process, args):
    result = train_in_this_process(*args, f"hydra.run.dir={tmp_path / 'outputs' / 'day' / 'time'}", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_input_keeps_an_empty_run_directory_it_did_not_make(tmp_path, train_in_this_process):
    (tmp_path / "run").mkdir()
    result = train_in_this_process("data=xor", "model=resnet", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert [path.name for path in tmp_path.rglob("*")] == ["run"]
