"""A trained model back from its checkpoint, for `evaluate` and `predict`: the run's config as saved in it (with the
data files where they are now), and the model it trained, with its weights, on the device the command asks for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainer.config import ConfigError
from trainer.data import DataDescription, DataSplits
from trainer.device import resolve_device
from trainer.engine import AUTOCAST_DTYPES, autocast_to
from trainer.resume import read
from trainer.run import build_model


@dataclass
class Trained:
    path: Path
    """The checkpoint file."""
    state: dict[str, Any]
    """What Engine.state_dict saved: "model" (the weights), "config", "data" (DataDescription.to_plain()), ..."""
    config: DictConfig
    """The run's resolved config, with the command's data.root and data.path in place of the saved ones."""
    device: torch.device

    def model(self, data: DataSplits | DataDescription) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The run's loss, and its model with the checkpoint's weights, on the device and in eval mode."""
        criterion, model = build_model(self.config, data)
        try:
            model.load_state_dict(self.state["model"])
        except RuntimeError as error:
            reason = str(error).splitlines()[-1].strip()  # torch's last line names a missing or misfit tensor
            raise ConfigError("ckpt_path", str(self.path),
                              f"a checkpoint whose weights fit the model its config describes ({reason})") from None
        return criterion, model.to(self.device).eval()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's trainer.precision, as its test ran."""
        return autocast_to(self.device, AUTOCAST_DTYPES[self.config.trainer.precision])


def load(cfg: DictConfig) -> Trained:
    """The checkpoint the command's ckpt_path names (read with weights_only=True), its config with the command's
    data overrides, and the command's device. Mistakes are ConfigErrors naming the command's key."""
    path = Path(required(cfg, "ckpt_path", "the path of a checkpoint train wrote, e.g. runs/NAME/checkpoints/best.pt"))
    if not path.is_file():
        raise ConfigError("ckpt_path", str(path), "the path of a checkpoint file that exists, e.g. "
                                                  "runs/NAME/checkpoints/best.pt")
    state = read(path, "ckpt_path", required=("model", "config"))
    config = OmegaConf.create(state["config"])
    for key, value in cfg.data.items():
        if value is None:
            continue
        if key not in config.data:
            raise ConfigError(f"data.{key}", value, f"null: the run's data ({config.data.get('_target_')}) has no "
                                                    f"{key} (data.root is for image sets, data.path for data=csv)")
        config.data[key] = value
    try:
        device = resolve_device(cfg.device)
    except ConfigError as error:  # resolve_device names train's key
        raise ConfigError("device", error.value, error.allowed) from None
    return Trained(path, state, config, device)


def required(cfg: DictConfig, key: str, allowed: str) -> Any:
    """The command's value for `key`; a ConfigError when it was left at ??? (Hydra's mark of a required value)."""
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(key, "???", f"{allowed} (a value is required)")
    return cfg[key]
