"""A trained model back from its checkpoint, for `evaluate` and `predict`: the run's config as saved in it (with the
data files where they are now), and the model it trained, with its weights, on the device the command asks for."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from trainer.config import ConfigError, TrainerConfig, validate
from trainer.data import DataDescription, DataSplits
from trainer.device import resolve_device
from trainer.engine import AUTOCAST_DTYPES, autocast_to
from trainer.resume import read
from trainer.run import build_model
from trainer.trust import Untrusted, check_trusted, command_config_dirs


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
    try:
        check_trusted(state["config"], state.get("choices"), patterns=trusted_patterns(cfg),
                      config_dirs=command_config_dirs())
    except Untrusted as untrusted:
        raise ConfigError("ckpt_path", str(path), f"a checkpoint that names only trusted code ({untrusted})") from None
    config = OmegaConf.create(state["config"])
    check_values(config, path)
    if "download" in config.data:  # whether to fetch files is the command line's to say, never the checkpoint's
        config.data.download = cfg.data.download
    for key, value in cfg.data.items():
        if value is None or key == "download":
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


def trusted_patterns(cfg: DictConfig) -> list[str]:
    """The command line's `trust`: globs of the code (e.g. my_pkg.*) that a checkpoint's config may name."""
    patterns = OmegaConf.to_container(cfg.trust) if OmegaConf.is_list(cfg.trust) else cfg.trust
    if not isinstance(patterns, list) or not all(isinstance(pattern, str) and pattern for pattern in patterns):
        raise ConfigError("trust", patterns, "a list of module or class globs, e.g. [my_pkg.*]")
    return patterns


def check_values(config: DictConfig, path: Path) -> None:
    """The saved values against the rules `train` checks (configs and TrainerConfig), as `train` would have checked
    them; where the data's files and a resume are now is no concern of a saved config."""
    checked = OmegaConf.masked_copy(config, [key for key in config if key != "logger"])  # (its extra: train's)
    try:
        with open_dict(checked):
            checked.data.pop("path", None)
            # onto the schema, as Hydra composes it: its types are checked, and its __post_init__ rules by validate
            checked.trainer = OmegaConf.merge(OmegaConf.structured(TrainerConfig), checked.trainer)
            checked.trainer.resume = checked.trainer.init_from = None
        validate(checked)
    except ConfigError as error:
        raise ConfigError("ckpt_path", str(path), f"a checkpoint whose config train would run ({error})") from None
    except (OmegaConfBaseException, AttributeError, TypeError) as error:
        raise ConfigError("ckpt_path", str(path), f"a checkpoint whose config train would run "
                                                  f"({' '.join(str(error).split())})") from None


def required(cfg: DictConfig, key: str, allowed: str) -> Any:
    """The command's value for `key`; a ConfigError when it was left at ??? (Hydra's mark of a required value)."""
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(key, "???", f"{allowed} (a value is required)")
    return cfg[key]
