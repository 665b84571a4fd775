"""The `export` command: a checkpoint's model to share without code, as NAME.safetensors and NAME.json beside it;
or, with format=onnx or format=torchscript, as one graph that runs without this package (graph_export).

A checkpoint is a pickle: torch reads it with weights_only=True, but whoever receives it still needs torch's
unpickler to trust. The exported pair holds no pickle at all. NAME.safetensors is the model's state_dict alone, a
flat table of tensors that any safetensors reader (Python, Rust, JavaScript) takes without running anything;
NAME.json is plain JSON of what rebuilds the model around it: the run's resolved config and the config group choices
it was composed from, the description of its data, the epoch of the weights, and the SHA-256 of NAME.safetensors.
`evaluate` and `predict` take ckpt_path=NAME.safetensors as they take a checkpoint (trained.read_exported).

The checkpoint is read as `evaluate` reads it (trained.read_trusted: digest verified, only trusted code named, values
train would run), so a pair is only ever exported from a checkpoint they would accept. Both files are written to
temp files beside them, fsynced, and renamed into place: a refused write (a full or read-only disk) leaves the
previous pair as it was and no temp file, and is an OSError naming the file, which the command reports in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from omegaconf import DictConfig, OmegaConf

from trainer.config import ConfigError
from trainer.inference.graph_export import exported_graph
from trainer.inference.prediction import description_of
from trainer.inference.trained_model import EXPORT_FORMAT_VERSION, EXPORTED_SUFFIX, Trained, read_trusted, run_settings
from trainer.training.checkpoint import fsync_folder

SUFFIXES = {"safetensors": EXPORTED_SUFFIX, "onnx": ".onnx", "torchscript": ".torchscript"}
"""What `format` may be, and the suffix of the file each writes. (Not .pt for TorchScript: beside best.pt, the
default would overwrite the checkpoint it was read from.)"""
SAFETENSORS_METADATA = {"format": "trainer", "format_version": str(EXPORT_FORMAT_VERSION)}
"""The header of every NAME.safetensors (safetensors metadata is strings only): which program's layout it has."""


def exported_pair(state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The content of NAME.safetensors and NAME.json for a checkpoint's `state`."""
    # Each tensor a contiguous copy of its own: safetensors stores neither views nor tensors that share memory (a
    # model's tied weights), and the reader's load_state_dict fills each parameter from its own entry.
    weights = safetensors.torch.save({name: tensor.detach().clone(memory_format=torch.contiguous_format)
                                      for name, tensor in state["model"].items()}, metadata=SAFETENSORS_METADATA)
    described = {"format_version": EXPORT_FORMAT_VERSION, "config": state["config"], "choices": state.get("choices"),
                 "data": state.get("data"), "epoch": state.get("engine", {}).get("epoch"),
                 "sha256": hashlib.sha256(weights).hexdigest()}
    return weights, described


def write_together(files: dict[Path, bytes]) -> None:
    """Write each file to a temp file in its folder, fsync it, then rename them all into place: a failure leaves every
    file as it was and no temp file. (Between the renames a reader finds the new weights with the old JSON: their
    SHA-256 differs, and the pair is refused, never half believed.) The folders are synced too, so the renames
    outlast a power cut. A refused write raises an OSError whose filename
    is the file that was being written."""
    # (A stem cut to 100 characters: a temp name longer than the file's own would fail where the file's would not.)
    temps = {path: path.with_name(f".{path.stem[:100]}{path.suffix}.{os.getpid()}.tmp") for path in files}
    try:
        for writing, content in files.items():
            writing.parent.mkdir(parents=True, exist_ok=True)
            with temps[writing].open("wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
        for writing in files:
            os.replace(temps[writing], writing)
        for folder in {path.parent for path in files}:
            fsync_folder(folder)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(writing)) from None
    finally:
        for temp in temps.values():
            if os.path.lexists(temp):  # (unlinking a missing file on a read-only disk fails, hiding the first error)
                temp.unlink()


def output_path(cfg: DictConfig, checkpoint: Path) -> Path:
    """Where the file of `format` goes: `output`, or beside the checkpoint with the format's suffix
    (runs/x/checkpoints/best.pt -> runs/x/checkpoints/best.safetensors). A safetensors file's JSON goes beside it,
    with the same stem. Never the checkpoint itself (one named best.onnx, or a pair exported again onto itself)."""
    suffix = SUFFIXES[cfg.format]
    output = checkpoint.with_suffix(suffix) if cfg.output is None else Path(str(cfg.output))
    if cfg.output is not None and (not isinstance(cfg.output, str) or output.suffix != suffix
                                   or os.path.isdir(output)):  # (Path.is_dir raises for a name too long)
        beside = " (its .json is written beside it)" if cfg.format == "safetensors" else ""
        raise ConfigError("output", cfg.output, f"the path of a {suffix} file to write{beside}, or null: beside the "
                                                f"checkpoint")
    folder = next(folder for folder in output.absolute().parents if os.path.exists(folder))
    if not folder.is_dir():
        raise ConfigError("output", cfg.output, f"a path in a folder ({folder} is a file)")
    written = (output, output.with_suffix(".json")) if cfg.format == "safetensors" else (output,)
    if any(os.path.exists(path) and path.samefile(checkpoint) for path in written):  # (a checkpoint named best.onnx)
        raise ConfigError("output", cfg.output, f"the path of a file other than the checkpoint it reads ({checkpoint})")
    if cfg.format == "safetensors" and os.path.lexists(written[1]) and not _is_an_exported_json(written[1]):
        raise ConfigError("output", cfg.output, f"a name whose .json is free or an exported pair's ({written[1]} is "
                                                f"another file, which the pair's JSON would replace)")
    return output


def _is_an_exported_json(path: Path) -> bool:
    """Whether `path` is the JSON of a pair exported before, which exporting again replaces (summary.json is not)."""
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # (UnicodeDecodeError is a ValueError)
        return False
    return isinstance(described, dict) and {"format_version", "sha256"} <= described.keys()


def main(cfg: DictConfig) -> None:
    """`export`, once Hydra has composed configs/export.yaml: read the checkpoint as evaluate does, write the pair
    (or the graph of format=onnx or torchscript)."""
    if not isinstance(cfg.format, str) or cfg.format not in SUFFIXES:
        raise ConfigError("format", cfg.format, f"one of {', '.join(SUFFIXES)}")
    checkpoint, state = read_trusted(cfg)
    weights_path = output_path(cfg, checkpoint)
    model = state["model"]
    if not (isinstance(model, dict) and all(isinstance(name, str) and isinstance(tensor, torch.Tensor)
                                            for name, tensor in model.items())):
        raise ConfigError("ckpt_path", str(checkpoint), "a checkpoint whose model is a state_dict of tensors")
    if cfg.format != "safetensors":
        _export_graph(cfg.format, checkpoint, state, weights_path)
        return
    json_path = weights_path.with_suffix(".json")
    weights, described = exported_pair(state)
    write_together({weights_path: weights, json_path: (json.dumps(described, indent=2) + "\n").encode()})
    print(f"exported {checkpoint} (epoch {described['epoch']}) to {weights_path} and {json_path}")


def _export_graph(format: str, checkpoint: Path, state: dict[str, Any], output: Path) -> None:
    """The checkpoint's model, on the CPU, as the graph of `format` (onnx or torchscript), written to `output`."""
    config = OmegaConf.create(state["config"])
    config.trainer = run_settings(config.trainer)
    trained = Trained(checkpoint, state, config, torch.device("cpu"))
    content, checked = exported_graph(format, trained, description_of(trained))
    write_together({output: content})
    print(f"exported {checkpoint} (epoch {trained.epoch}) to {output}; {checked}")
