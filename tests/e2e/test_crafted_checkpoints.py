"""A checkpoint carries data, never code: crafted checkpoints whose config names a gadget (a callable that writes
files or runs a command) are refused by every command that reads one, in one line with exit code 2, and nothing
is created, changed or run. The checkpoints below are sealed with a valid digest, as an attacker can do.
(tests/unit/config/test_trust.py holds check_trusted's own tests.)"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from helpers.commands import assert_succeeded
from trainer.training.checkpoint import load_checkpoint, save_checkpoint


RUN = ("data=xor", "model.hidden_sizes=[4]", "trainer.max_epochs=1", "trainer.curves=false",
       "trainer.health.every_n_steps=null", "trainer.device=cpu")


def gadgets(watched: Path) -> dict[str, tuple[str, object]]:
    """name -> (the dotted place in the saved config, the value put there). Each gadget, if it ran, would change
    `watched` or create its `marker`."""
    victim, marker = str(watched / "victim.txt"), str(watched / "marker")
    shell = f"touch {marker}"
    return {
        "loss-open-truncates": ("loss", {"_target_": "builtins.open", "file": victim, "mode": "w"}),
        "model-copyfile": ("model", {"_target_": "shutil.copyfile", "src": victim, "dst": marker}),
        "data-makedirs": ("data", {"_target_": "os.makedirs", "name": marker, "task": "binary"}),
        "loss-torch-save": ("loss", {"_target_": "torch.save", "obj": 1, "f": marker}),
        "model-print-to-open-file": ("model", {"_target_": "builtins.print", "_args_": ["x"], "file": {
            "_target_": "builtins.open", "file": marker, "mode": "a"}}),
        "data-savetxt-header": ("data", {"_target_": "numpy.savetxt", "fname": marker, "X": [[1]],
                                         "header": shell, "task": "binary"}),
        "loss-logging-os-system": ("loss", {"_target_": "logging.os.system", "command": shell}),
        "model-os-system": ("model", {"_target_": "os.system", "command": shell}),
        "optimizer-subprocess": ("optimizer", {"_target_": "subprocess.call", "args": shell, "shell": True}),
        "scheduler-exec": ("scheduler", {"_target_": "builtins.exec", "source": "open('marker','w')"}),
        "logger-eval": ("logger", {"_target_": "builtins.eval", "source": "1"}),
        "nested-in-model": ("model.activation", {"_target_": "os.system", "command": shell}),
        "nested-in-data": ("data.augment", {"_target_": "builtins.open", "file": victim, "mode": "w"}),
        "nested-in-a-list": ("model.hidden_sizes", [4, {"_target_": "os.system", "command": shell}]),
        "top-level-key": ("evil", {"_target_": "os.system", "command": shell}),
        "args-of-a-trusted-loss": ("loss._args_", [{"_target_": "os.system", "command": shell}]),
        "recursive-flag": ("model._recursive_", False),
        "interpolated-target": ("model._target_", "${oc.env:EVIL_TARGET,os.system}"),
        "interpolated-value": ("data.root", "${oc.env:HOME}"),
        "interpolated-in-nested-value": ("model.hidden_sizes", ["${oc.decode:'[1]'}"]),
        "target-of-another-group": ("model._target_", "trainer.data.table.read_csv"),
        "target-not-a-string": ("model._target_", ["os", "system"]),
        "partial-not-a-bool": ("optimizer._partial_", "yes"),
        "choice-not-installed": ("choices.model", "../../../tmp/evil"),
        "choice-of-another-option": ("choices.model", "resnet"),
        "key-not-a-name": ("model", {"_target_": "trainer.models.MLP", "hidden sizes; rm -rf": [4]}),
        "partial-model": ("model._partial_", True),  # a function where a model is built: a traceback
        "partial-loss": ("loss._partial_", True),
    }


def sealed_with(state: dict, place: str, value: object) -> dict:
    """A copy of a checkpoint's state with `value` at `place` (in its config, or `choices.GROUP`)."""
    state = {**state, "config": _copy(state["config"]), "choices": dict(state["choices"] or {})}
    root, *keys = place.split(".")
    node = state["choices"] if root == "choices" else state["config"]
    keys = keys if root == "choices" else [root, *keys]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return state


def _copy(value):
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def folder_digest(folder: Path) -> str:
    """Every path, size, mtime and content under `folder`: any file created, changed or removed changes it."""
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        hasher.update(f"{path}:{stat.st_mode}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        if path.is_file():
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """A real run's best.pt, and each gadget sealed into a copy of it, in a watched folder."""
    import torch

    from trainer.run import train
    from conftest import compose_config

    folder = tmp_path_factory.mktemp("trust")
    run_dir = folder / "run"
    run_dir.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose_config(*RUN), run_dir)
    finally:
        torch.set_num_threads(threads)
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    state["choices"] = {"data": "xor", "model": "mlp", "loss": "bce", "optimizer": "adam", "scheduler": "none",
                        "logger": "csv"}  # as `train` records them (a composed config records none)
    watched = folder / "watched"
    watched.mkdir()
    (watched / "victim.txt").write_text("the user's file\n")
    (watched / "rows.json").write_text('{"x0": 1.0, "x1": 0.0}')
    crafted_dir = folder / "crafted"
    crafted_dir.mkdir()
    paths = {}
    for name, (place, value) in gadgets(watched).items():
        paths[name] = crafted_dir / f"{name}.pt"
        save_checkpoint(sealed_with(state, place, value), paths[name])
    save_checkpoint(state, crafted_dir / "honest.pt")
    return watched, paths, crafted_dir / "honest.pt"


COMMANDS = {
    "evaluate": lambda checkpoint, watched: ("evaluate", [f"ckpt_path={checkpoint}", "device=cpu",
                                                          f"output_dir={watched / 'out'}"]),
    "predict": lambda checkpoint, watched: ("predict", [f"ckpt_path={checkpoint}", f"input={watched / 'rows.json'}",
                                                        "device=cpu"]),
    "resume": lambda checkpoint, watched: ("train", [*RUN, f"trainer.resume={checkpoint}",
                                                     f"hydra.run.dir={watched / 'resumed'}"]),
    "init_from": lambda checkpoint, watched: ("train", [*RUN, f"trainer.init_from={checkpoint}",
                                                        f"hydra.run.dir={watched / 'started'}"]),
}


KEYS = {"evaluate": "ckpt_path", "predict": "ckpt_path", "resume": "trainer.resume", "init_from": "trainer.init_from"}


ACCEPTED_BY_TRAIN = ("choice-of-another-option",)
"""train trusts the components of its own command line: a checkpoint whose recorded choice differs but whose target
is this run's own runs nothing the user did not type."""


@pytest.mark.parametrize("command, gadget", [
    (command, gadget) for gadget in gadgets(Path("/watched")) for command in COMMANDS
    if not (KEYS[command].startswith("trainer.") and gadget in ACCEPTED_BY_TRAIN)])
def test_a_crafted_checkpoint_is_refused_in_one_line_and_runs_nothing(crafted, train_in_this_process, tmp_path,
                                                                      command, gadget):
    watched, paths, _ = crafted
    before = folder_digest(watched)
    name, args = COMMANDS[command](paths[gadget], watched)
    result = train_in_this_process(*args, cwd=tmp_path, command=name)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"{name}: error: {KEYS[command]}: got '{paths[gadget]}', expected a checkpoint ")
    assert folder_digest(watched) == before and not (watched / "marker").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_the_honest_copy_of_the_same_checkpoint_is_accepted(crafted, train_in_this_process, tmp_path, command):
    """The table's refusals come from the gadgets, not from the copying."""
    watched, _, honest = crafted
    name, args = COMMANDS[command](honest, tmp_path)
    (tmp_path / "rows.json").write_text('{"x0": 1.0, "x1": 0.0}')
    assert_succeeded(train_in_this_process(*args, cwd=tmp_path, command=name))


def test_evaluate_runs_a_trusted_user_model_when_the_command_line_trusts_it(tmp_path, train_in_this_process,
                                                                            monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Sequential):\n"
        "    def __init__(self, input_shape, num_outputs):\n"
        "        super().__init__(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], num_outputs))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    run = tmp_path / "run"
    assert_succeeded(train_in_this_process(*RUN, "model._target_=my_nets.Net", "~model.hidden_sizes",
                                           "~model.activation", "~model.norm", "~model.residual", "~model.init",
                                           "~model.dropout", f"hydra.run.dir={run}", cwd=tmp_path))
    checkpoint = run / "checkpoints" / "best.pt"
    refused = train_in_this_process(f"ckpt_path={checkpoint}", cwd=tmp_path, command="evaluate")
    assert refused.returncode == 2 and "trust=[my_nets.Net]" in refused.stderr
    assert_succeeded(train_in_this_process(f"ckpt_path={checkpoint}", "trust=[my_nets.*]", cwd=tmp_path,
                                           command="evaluate"))
