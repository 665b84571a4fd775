"""A checkpoint's backend settings (matmul precision, cuDNN autotuning, channels-last memory) as `evaluate` takes
them up: checked in their types, refused where they cannot work, and filled in for checkpoints older than them."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from trainer.training.checkpoint import load_checkpoint, save_checkpoint
from trainer.config import ConfigError
from trainer.data import DataDescription
from trainer.run import train
from trainer.inference.trained_model import Trained, load


def test_evaluate_computes_as_the_run_did_with_its_matmul_precision(tmp_path, train_in_this_process):
    """`evaluate` repeats a run's test: it takes the run's float32 matmul precision (TF32 or not) from the
    checkpoint, whatever the process had before."""
    trained = train_in_this_process("trainer.device=cpu", "model.hidden_sizes=[16]", "trainer.max_epochs=1",
                                    "trainer.matmul_precision=medium", "hydra.run.dir=run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    torch.set_float32_matmul_precision("highest")
    evaluated = train_in_this_process("ckpt_path=run/checkpoints/best.pt", "device=cpu", cwd=tmp_path,
                                      command="evaluate")
    assert evaluated.returncode == 0, evaluated.stderr
    assert torch.get_float32_matmul_precision() == "medium"


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory) -> dict[str, Path]:
    """best.pt of a small ResNet and of a small MLP, each trained one epoch on the CPU."""
    runs = {}
    for name, overrides in {"resnet": ("data=digits", "model=resnet", "model.channels=[4]",
                                       "model.blocks_per_stage=1"),
                            "mlp": ("data=xor", "model.hidden_sizes=[4]")}.items():
        run_dir = tmp_path_factory.mktemp(name)
        train(compose_config("trainer.device=cpu", "trainer.max_epochs=1", *overrides), run_dir)
        runs[name] = run_dir / "checkpoints" / "best.pt"
    return runs


def with_trainer_settings(source: Path, folder: Path, drop: tuple[str, ...] = (), **settings) -> Path:
    """A copy of a checkpoint whose saved trainer settings were edited (a file from anyone), resealed."""
    state = load_checkpoint(source)
    trainer_settings = {key: value for key, value in state["config"]["trainer"].items() if key not in drop}
    state["config"] = {**state["config"], "trainer": {**trainer_settings, **settings}}
    path = folder / "edited.pt"
    save_checkpoint(state, path)
    return path


def trained_from(path: Path) -> Trained:
    return load(OmegaConf.create({"ckpt_path": str(path), "trust": [], "device": "cpu",
                                  "data": {"root": None, "path": None, "download": False}}))


@pytest.mark.parametrize("written, meant", [("false", False), ("no", False), ("off", False), ("true", True)])
def test_a_checkpoint_s_settings_are_applied_as_checked_in_their_types(saved_runs, tmp_path, written, meant):
    """A setting written as text passes the schema as the bool it means; evaluate applies that bool, never the
    text (the string "false" is true in Python)."""
    trained = trained_from(with_trainer_settings(saved_runs["resnet"], tmp_path, channels_last=written,
                                                 cudnn_benchmark=written))
    _, model = trained.model(trained_data(trained))
    assert trained.config.trainer.channels_last is meant and trained.config.trainer.cudnn_benchmark is meant
    assert trained.memory_format(model) == (torch.channels_last if meant else torch.contiguous_format)


def test_a_checkpoint_asking_channels_last_for_a_model_without_convolutions_is_refused_naming_ckpt_path(
        saved_runs, tmp_path):
    trained = trained_from(with_trainer_settings(saved_runs["mlp"], tmp_path, channels_last=True))
    with pytest.raises(ConfigError, match=r"^ckpt_path: got .*, expected a checkpoint whose config train would run "
                                          r"\(trainer.channels_last: got True"):
        trained.model(trained_data(trained))


def test_a_checkpoint_saved_before_the_settings_existed_is_evaluated_as_its_run_computed(saved_runs, tmp_path):
    new_settings = ("matmul_precision", "cudnn_benchmark", "channels_last")
    trained = trained_from(with_trainer_settings(saved_runs["resnet"], tmp_path, drop=new_settings))
    settings = trained.config.trainer
    assert (settings.matmul_precision, settings.cudnn_benchmark, settings.channels_last) == ("highest", False, False)


def trained_data(trained: Trained) -> DataDescription:
    return DataDescription.from_plain(trained.state["data"])
