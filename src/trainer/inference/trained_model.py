"""A trained model back from its checkpoint, for `evaluate` and `predict`: the run's config as saved in it (with the
data files where they are now), and the model it trained, with its weights, on the device the command asks for.

The model may also come as the pair `export` writes to share it without code (trainer.inference.export):
NAME.safetensors, the weights, and NAME.json beside it, the rest of what a checkpoint says. Neither holds a pickle:
the weights are a flat table of tensors, the rest plain JSON, and both are believed only as far as a checkpoint is
(read_exported).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import safetensors.torch
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from trainer.config import NON_NEGATIVE_INT, POSITIVE_INT, ConfigError, Rule, TrainerConfig, validate
from trainer.config.trust import Untrusted, check_trusted, command_config_dirs
from trainer.data import DataDescription
from trainer.data.preprocessing import plain_problem
from trainer.run import build_model
from trainer.training.backends import memory_format_for, use_backend_settings
from trainer.training.device import resolve_device
from trainer.training.precision import autocast_dtype, autocast_to
from trainer.training.resume import read

EXPORTED_SUFFIX = ".safetensors"
EXPORT_FORMAT_VERSION = 1
"""The layout of the pair `export` writes: NAME.safetensors, the model's state_dict, and NAME.json beside it, with
the keys of EXPORTED_JSON: the run's resolved config and group choices, its data description, the epoch of the
weights, and the SHA-256 of NAME.safetensors."""
EXPORTED_JSON = {
    "format_version": POSITIVE_INT,
    "config": Rule(lambda v: isinstance(v, dict), "an object of settings"),
    "choices": Rule(lambda v: v is None or isinstance(v, dict), "an object of group: option, or null"),
    "data": Rule(lambda v: v is None or isinstance(v, dict), "a data description, or null"),
    "epoch": Rule(lambda v: v is None or NON_NEGATIVE_INT.accepts(v), f"{NON_NEGATIVE_INT.allowed}, or null"),
    "sha256": Rule(lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
                   "64 hexadecimal digits"),
}
MAX_EXPORTED_JSON_BYTES = 16 * 2**20
"""A model's JSON holds a config and a data description: a larger file is no export's, and is not read."""


@dataclass
class Trained:
    path: Path
    """The checkpoint file."""
    state: dict[str, Any]
    """What Engine.state_dict saved: "model" (the weights), "config", "data" (DataDescription.to_plain()), ..."""
    config: DictConfig
    """The run's resolved config, with the command's data.root and data.path in place of the saved ones."""
    device: torch.device

    def model(self, data: DataDescription) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The run's loss, and its model with the checkpoint's weights, on the device and in eval mode. The model
        is first built on the meta device, which allocates nothing: a config whose sizes do not fit the weights (a
        crafted hidden_sizes=[200000,200000] would ask for 160 GB) is refused before any memory is taken."""
        misfit = self._misfit_weights(data)
        if misfit is None:
            criterion, model = build_model(self.config, data)
            try:
                model.load_state_dict(self.state["model"])
            except RuntimeError as error:
                misfit = str(error).splitlines()[-1].strip()  # torch's last line names a missing or misfit tensor
        if misfit is not None:
            raise ConfigError("ckpt_path", str(self.path),
                              f"a checkpoint whose weights fit the model its config describes ({misfit})")
        memory_format = self.memory_format(model)
        run = self.config.trainer
        use_backend_settings(self.device, run.matmul_precision, run.cudnn_benchmark, run.deterministic)
        return criterion, model.to(self.device, memory_format=memory_format).eval()

    def memory_format(self, model: torch.nn.Module) -> torch.memory_format:
        """The memory format the run gave `model` and its batches on this device (trainer.channels_last)."""
        try:
            return memory_format_for(model, self.device, self.config.trainer.channels_last)
        except ConfigError as error:
            raise ConfigError("ckpt_path", str(self.path), f"a checkpoint whose config train would run ({error})") \
                from None

    def _misfit_weights(self, data: DataDescription) -> Optional[str]:
        """The first weight whose name or shape differs between the checkpoint and the model its config describes,
        built without memory on the meta device; None when they fit, or when the model cannot be built there."""
        try:
            with torch.device("meta"):
                _, skeleton = build_model(self.config, data)
        except Exception:  # (an op without a meta kernel: the real build below finds any misfit)
            return None
        expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
        saved = {name: tuple(tensor.shape) for name, tensor in self.state["model"].items()}
        for name in [*expected, *(name for name in saved if name not in expected)]:  # in the model's order
            if expected.get(name) != saved.get(name):
                return (f"{name} has shape {saved.get(name, 'none')} in it, {expected.get(name, 'none')} in the "
                        f"model its config describes")
        return None

    @property
    def epoch(self) -> Optional[int]:
        """The epochs trained when the weights were saved (read_trusted checked it); None when not known."""
        return self.state.get("engine", {}).get("epoch")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's trainer.precision, as its test ran."""
        return autocast_to(self.device, autocast_dtype(self.config.trainer.precision, self.device))


def load(cfg: DictConfig) -> Trained:
    """The checkpoint (or exported model) the command's ckpt_path names, as read_trusted reads it, its config with the
    command's data overrides, and the command's device. Mistakes are ConfigErrors naming the command's key."""
    path, state = read_trusted(cfg)
    config = OmegaConf.create(state["config"])
    config.trainer = run_settings(config.trainer)
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


def read_trusted(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """The path ckpt_path names and what it holds: a checkpoint (read with weights_only=True, its digest verified), or
    a model `export` wrote (NAME.safetensors, see read_exported). Either is a file a stranger may have written, so
    it is believed only once its config names no code but what the command trusts (`trust`), holds values `train`
    would run, and describes its data as train does. Mistakes are ConfigErrors naming ckpt_path."""
    path = Path(required(cfg, "ckpt_path", "the path of a checkpoint train wrote, e.g. runs/NAME/checkpoints/best.pt"))
    if not os.path.isfile(path):  # (Path.is_file raises for a name too long for the OS)
        raise ConfigError("ckpt_path", str(path), "the path of a checkpoint file that exists, e.g. "
                                                  "runs/NAME/checkpoints/best.pt")
    if path.suffix == EXPORTED_SUFFIX:
        state = read_exported(path)
    else:
        state = read(path, "ckpt_path", required=("model", "config"))
    try:
        check_trusted(state["config"], state.get("choices"), patterns=trusted_patterns(cfg),
                      config_dirs=command_config_dirs())
    except Untrusted as untrusted:
        raise ConfigError("ckpt_path", str(path), f"a checkpoint that names only trusted code ({untrusted})") from None
    engine = state.get("engine", {})
    if not isinstance(engine, dict) or not (engine.get("epoch") is None or NON_NEGATIVE_INT.accepts(engine["epoch"])):
        raise ConfigError("ckpt_path", str(path), f"a checkpoint train wrote (its engine counters are "
                                                  f"{engine!r:.60}, not a mapping of counts)")
    check_values(OmegaConf.create(state["config"]), path)
    problem = None if state.get("data") is None else plain_problem(state["data"])
    if problem is not None:
        raise ConfigError("ckpt_path", str(path), f"a checkpoint that describes its data as train does ({problem})")
    return path, state


def read_exported(path: Path) -> dict[str, Any]:
    """What `export` wrote, as a checkpoint's state: NAME.json's config, choices and data, its epoch as the engine's,
    and NAME.safetensors's weights as "model", once their SHA-256 is the one NAME.json gives. Nothing is unpickled:
    the JSON is read with `json` (at most MAX_EXPORTED_JSON_BYTES), the weights with safetensors, from the very bytes
    whose digest was checked. A missing or malformed JSON and weights that do not match it are ConfigErrors naming
    ckpt_path; the config itself is checked as a checkpoint's is (read_trusted)."""
    described = path.with_suffix(".json")

    def refused(reason: str) -> ConfigError:
        return ConfigError("ckpt_path", str(path), f"a model as train-export writes it, NAME.safetensors with "
                                                   f"NAME.json beside it ({reason})")

    if not described.is_file():
        raise refused(f"there is no file {described.name} beside it")
    try:
        with described.open("rb") as file:
            text = file.read(MAX_EXPORTED_JSON_BYTES + 1)
        weights = path.read_bytes()
    except OSError as error:
        raise refused(str(error)) from None
    if len(text) > MAX_EXPORTED_JSON_BYTES:
        raise refused(f"{described.name} is larger than {MAX_EXPORTED_JSON_BYTES // 2**20} MiB")
    try:
        exported = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise refused(f"{described.name} is not JSON: {error}") from None
    except RecursionError:
        raise refused(f"{described.name} nests lists or objects too deeply to read") from None
    problem = _exported_json_problem(exported)
    if problem is not None:
        raise refused(f"{described.name}: {problem}")
    if hashlib.sha256(weights).hexdigest() != exported["sha256"]:
        raise refused(f"its SHA-256 is not the one {described.name} gives: the weights were altered or damaged after "
                      f"export wrote them, or belong to another export")
    try:
        tensors = safetensors.torch.load(weights)
    except Exception as error:  # (the bytes are as export wrote them, or a stranger wrote both files)
        raise refused(f"not a safetensors file: {error}") from None
    return {"model": tensors, "config": exported["config"], "choices": exported["choices"], "data": exported["data"],
            "engine": {"epoch": exported["epoch"]}}


def _exported_json_problem(exported: Any) -> Optional[str]:
    """What keeps `exported` (a parsed JSON file) from being what export writes; None when it is. The values inside
    the config, the choices and the data are read_trusted's to check."""
    if not isinstance(exported, dict) or set(exported) != set(EXPORTED_JSON):
        return f"not an object of {', '.join(EXPORTED_JSON)}"
    for key, rule in EXPORTED_JSON.items():
        if not rule.accepts(exported[key]):
            return f"its {key} is {exported[key]!r:.60}, not {rule.allowed}"
    if exported["format_version"] > EXPORT_FORMAT_VERSION:
        return (f"format {exported['format_version']}, written by a newer export (this one reads formats 1 to "
                f"{EXPORT_FORMAT_VERSION}): upgrade trainer to read it")
    return None


def trusted_patterns(cfg: DictConfig) -> list[str]:
    """The command line's `trust`: globs of the code (e.g. my_pkg.*) that a checkpoint's config may name."""
    patterns = OmegaConf.to_container(cfg.trust) if OmegaConf.is_list(cfg.trust) else cfg.trust
    if not isinstance(patterns, list) or not all(isinstance(pattern, str) and pattern for pattern in patterns):
        raise ConfigError("trust", patterns, "a list of module or class globs, e.g. [my_pkg.*]")
    return patterns


SETTINGS_BEFORE_THEY_EXISTED = {"matmul_precision": "highest", "cudnn_benchmark": False, "channels_last": False}
"""How a run saved before these trainer settings existed computed: evaluate and predict repeat it so."""


def run_settings(saved: DictConfig) -> DictConfig:
    """A checkpoint's trainer settings on the TrainerConfig schema, as check_values checked them: its values in
    their types ("false" read as False), and the settings it predates as that run computed."""
    older = {key: value for key, value in SETTINGS_BEFORE_THEY_EXISTED.items() if key not in saved}
    return OmegaConf.merge(OmegaConf.structured(TrainerConfig), saved, older)


def check_values(config: DictConfig, path: Path) -> None:
    """The saved values against the rules `train` checks (configs and TrainerConfig), as `train` would have checked
    them; where the data's files and a resume are now is no concern of a saved config."""
    checked = OmegaConf.masked_copy(config, [key for key in config if key != "logger"])  # (its extra: train's)
    try:
        with open_dict(checked):
            checked.data.pop("path", None)
            # onto the schema, as Hydra composes it: its types are checked, and its __post_init__ rules by validate
            checked.trainer = run_settings(checked.trainer)
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
