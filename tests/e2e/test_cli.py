"""The `train` command as a user runs it: a subprocess, from some other working directory.

Each subprocess costs seconds, so each test asks several questions of one run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import options
from helpers.commands import assert_succeeded, run_command, train
from trainer.training.checkpoint import load_checkpoint

GROUPS = ("data", "model", "loss", "optimizer", "scheduler", "experiment")


def python_m_trainer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_command([sys.executable, "-m", "trainer", *args], cwd)


# --- runs -------------------------------------------------------------------------------------------------------

def test_train_runs_end_to_end_from_another_directory(tmp_path, elsewhere):
    run_dir = tmp_path / "run"
    result = train("trainer.max_epochs=3", f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["epochs"], summary["stop_reason"]) == (3, "max_epochs")
    assert summary["test"]["accuracy"] > 0.8
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.max_epochs == 3
    assert "epoch 3/3" in (run_dir / "train.log").read_text()
    assert f"test metrics (best epoch {summary['best_epoch']} of 3, stopped by max_epochs" in result.stdout
    for name, value in summary["test"].items():
        assert re.search(rf"^\s+{name}\s+{value:.4f}$", result.stdout, re.MULTILINE), name
    assert list(elsewhere.iterdir()) == [], "the run wrote into the working directory"


def test_python_m_trainer_runs_like_train(tmp_path, elsewhere):
    run_dir = tmp_path / "run"
    result = python_m_trainer("trainer.max_epochs=1", "model.hidden_sizes=[32]", f"hydra.run.dir={run_dir}",
                              cwd=elsewhere)
    assert_succeeded(result)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 1
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert "test metrics (best epoch 1 of 1" in result.stdout


def test_a_user_config_folder_adds_options(tmp_path, elsewhere, train_in_this_process):
    """--config-dir is Hydra's reading of the command line, not the console script's: this process will do."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("_target_: trainer.models.MLP\nhidden_sizes: [8]\n")
    run_dir = tmp_path / "run"
    result = train_in_this_process("--config-dir", str(tmp_path / "conf"), "model=tiny", "trainer.max_epochs=1",
                                   f"hydra.run.dir={run_dir}", cwd=elsewhere)
    assert_succeeded(result)
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").model.hidden_sizes == [8]
    weights = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    assert weights["hidden.0.linear.weight"].shape == (8, 64)  # 8 units over the 8x8 digit pixels


# --- help and the composed config -------------------------------------------------------------------------------

def test_help_lists_every_option_of_every_group(elsewhere):
    result = train("--help", cwd=elsewhere)
    assert_succeeded(result)
    groups_section = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = dict(re.findall(r"^(\w+): (.+)$", groups_section, re.MULTILINE))
    for group in GROUPS:
        assert listed.get(group, "").split(", ") == options(group), group


LIGHT_IMPORT = """
import json, sys
sys.argv = ["train", *json.loads(sys.argv[1])]
from trainer.cli import train
try:
    train()
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({"exit": code, **{f"{name} imported": name in sys.modules for name in ("torch", "pyarrow")}}))
"""


@pytest.mark.parametrize("args, exit_code", [
    (["--help"], 0),
    (["model=foo"], 2),
    (["optimizer.lr=-1"], 2),
    (["data=parquet", "data.path=t.parquet", "data.target=y", "optimizer.lr=-1"], 2),  # the table is not read yet
], ids=["help", "unknown-option", "bad-value", "table-bad-value"])
def test_help_and_config_errors_do_not_import_torch_or_pyarrow(tmp_path, elsewhere, args, exit_code):
    result = run_command([sys.executable, "-c", LIGHT_IMPORT, json.dumps([*args, f"hydra.run.dir={tmp_path / 'run'}"])],
                         elsewhere)
    assert json.loads(result.stdout.splitlines()[-1]) == {"exit": exit_code, "torch imported": False,
                                                          "pyarrow imported": False}


WITHOUT_PLUGIN = """
import sys
for name in sys.argv[1].split(","):  # as if the extra that installs this Hydra plugin were not installed
    sys.modules[name] = None
sys.argv = ["train", *sys.argv[2:]]
from trainer.cli import train
train()
"""


@pytest.mark.parametrize("plugin, args, said", [
    ("hydra_submitit_launcher", ["-m", "hydra/launcher=slurm"], 'hydra/launcher=slurm needs the `slurm` extra, which '
                                                                'is not installed: pip install "hydra-torch-trainer[slurm]"'),
    ("hydra_optuna_sweeper", ["-m", "hparams_search=optuna"], 'hparams_search=optuna needs the `optuna` extra, which '
                                                              'is not installed: pip install "hydra-torch-trainer[optuna]"'),
], ids=["slurm", "optuna"])
def test_an_option_whose_extra_is_missing_names_the_install(elsewhere, plugin, args, said):
    modules = ",".join(f"hydra_plugins.{plugin}{part}" for part in ("", ".config", ".submitit_launcher",
                                                                     ".optuna_sweeper"))
    result = run_command([sys.executable, "-c", WITHOUT_PLUGIN, modules, *args, "data=xor"], elsewhere)
    assert (result.returncode, result.stderr) == (2, f"train: error: {said}\n")


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_a_config_error_is_one_line_and_exit_2_even_with_hydra_full_error_0_in_the_environment(elsewhere, command):
    """Hydra reads HYDRA_FULL_ERROR from the environment: set to 0 (or empty) there, it printed its own report of
    several lines and exited 1."""
    result = run_command([shutil.which(command, path=str(Path(sys.executable).parent)), "nosuch=1"], elsewhere,
                         {"HYDRA_FULL_ERROR": "0"})
    assert (result.returncode, result.stderr) == (
        2, f"{command}: error: nosuch: no such setting (`{command} --cfg job` lists the settings)\n")


def test_cfg_job_prints_the_composed_config_with_the_overrides(tmp_path, elsewhere):
    run_dir = tmp_path / "run"
    result = train("--cfg", "job", "model=transformer", "optimizer.lr=0.123", f"hydra.run.dir={run_dir}",
                   cwd=elsewhere)
    assert_succeeded(result)
    cfg = OmegaConf.create(result.stdout)
    assert cfg.model._target_ == "trainer.models.Transformer"
    assert cfg.optimizer.lr == 0.123
    assert cfg.trainer.max_epochs == 100
    assert "hydra" not in cfg
    assert not run_dir.exists()


# --- mistakes ---------------------------------------------------------------------------------------------------

def test_an_argument_the_model_rejects_exits_2_with_one_line(tmp_path, elsewhere, train_in_this_process):
    """The mistakes with the key, value and what is allowed are the table of test_bad_input; this one is the
    user's own argument, which only the model's class can judge (in this process: the refusal is train's, not the
    console script's)."""
    result = train_in_this_process("+model.foo=1", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}",
                                   cwd=elsewhere)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("train: error: Error in call to target 'trainer.models.MLP': TypeError: "), (
        result.stderr)
    assert not (tmp_path / "run").exists()


def test_a_regular_install_carries_the_configs_inside_the_package(tmp_path, elsewhere):
    """The wheel (not the editable install) puts configs/ in trainer/configs, and `train` runs from there."""
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    project = Path(__file__).resolve().parents[2]
    build = run_command([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheel_dir),
                         str(project)], elsewhere)
    assert build.returncode == 0, build.stderr
    install = run_command([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                           *map(str, wheel_dir.glob("*.whl"))], elsewhere)
    assert install.returncode == 0, install.stderr
    env_path = {"PYTHONPATH": str(site)}  # the wheel's trainer shadows the editable one
    where = run_command([sys.executable, "-c", "import trainer.config as c; print(c.config_dir())"], elsewhere,
                        env_path)
    assert where.stdout.strip() == str(site / "trainer" / "configs")
    run_dir = tmp_path / "run"
    result = run_command([sys.executable, "-m", "trainer", "data=moons", "trainer.max_epochs=1",
                          f"hydra.run.dir={run_dir}"], elsewhere, env_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1
