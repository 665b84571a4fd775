"""Starting a run from a checkpoint: continuing it exactly (trainer.resume) or taking its weights (init_from).

A checkpoint only fits the config it was written with where that decides the tensors' shapes, which samples are
trained on or how the weights move (model, loss, data, seed, optimizer, schedule), so those parts must match;
anything else (max_epochs, the device, the pipeline) may change. A run never overwrites the checkpoints of
another: a new run in a run directory that holds some is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch

from trainer.config import ConfigError, TrainerConfig
from trainer.config.trust import Untrusted, check_trusted, command_config_dirs
from trainer.data import Batcher
from trainer.training.checkpoint import DamagedCheckpoint, load_checkpoint, previous_path, remove_stale_temp_files
from trainer.training.engine import Engine

log = logging.getLogger(__name__)

# Data settings that may change between a run and its continuation: where the files are and how batches travel.
DATA_KEYS_FREE_TO_CHANGE = ("root", "download", "pipeline", "num_workers", "pin_memory")
RESUMED_SECTIONS = ("model", "loss", "data", "seed", "optimizer", "scheduler")
"""The config sections a resumed run must share with its checkpoint."""
RESUME_KEYS = ("model", "optimizer", "scheduler", "scaler", "early_stopping", "engine", "epoch_progress", "batcher",
               "rng", "metrics")
"""What a checkpoint must hold to continue a run from it (Engine.load_state_dict reads these)."""
CHECKPOINT_NAMES = ("last.pt", "last.previous.pt", "best.pt")


def start_from_checkpoints(settings: TrainerConfig, engine: Engine, train: Batcher, run_dir: Path) -> None:
    """Apply trainer.init_from or trainer.resume to a freshly built engine, before it fits."""
    if settings.init_from is not None:
        state = read(Path(settings.init_from), "trainer.init_from", required=())
        _check_trusted(state, "trainer.init_from", settings.init_from, engine.config)
        # A checkpoint of train's, or a bare state_dict (torch.save(model.state_dict(), PATH)): weights of your own.
        weights = state.get("model", state) if isinstance(state, dict) else {}
        _start_from_weights(engine, weights, "trainer.init_from", settings.init_from, "a checkpoint of this model")
    if settings.init_weights:
        _start_from_weights(engine, settings.init_weights, "trainer.init_weights", "{...}",
                            "a value for every parameter of this model, in its shape")
    checkpoint_dir = run_dir / settings.checkpoint.dir
    for stale in remove_stale_temp_files(checkpoint_dir):
        log.info("removed %s, left by a save that was killed part-way", stale)
    found = _checkpoint_to_resume(settings.resume, checkpoint_dir, engine.config)
    if found is None:
        return
    path, state = found
    _check_trusted(state, "trainer.resume", str(path), engine.config)
    difference = setup_difference(state.get("config", {}), engine.config)
    if difference is not None:
        raise ConfigError("trainer.resume", str(path), f"a checkpoint of this config ({difference})")
    try:
        engine.load_state_dict(state, train)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        reason = " ".join(str(error).split())  # (a state_dict's errors come in several lines)
        raise ConfigError("trainer.resume", str(path), f"a checkpoint whose saved state fits this run "
                                                       f"({type(error).__name__}: {reason})") from None
    _set_damaged_last_aside(checkpoint_dir / "last.pt", path)  # once the fallback is known to be good
    log.info("resumed from %s: %d epochs and %d steps done", path, engine.epoch, engine.global_step)


def _start_from_weights(engine: Engine, weights: dict[str, Any], key: str, shown: str, allowed: str) -> None:
    """The model's weights from a state_dict (trainer.init_from) or from plain values, nested lists of numbers
    (trainer.init_weights), all of them."""
    try:
        engine.model.load_state_dict({name: torch.as_tensor(value, dtype=torch.float32) if isinstance(value, list)
                                      else value for name, value in weights.items()})
    except (RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(key, shown, f"{allowed} ({str(error).splitlines()[-1].strip()})") from None
    # nan, inf, or a number beyond float32's range (1e39 becomes inf): the first step's loss would not be finite,
    # and the run would stop blaming the learning rate.
    for name, tensor in engine.model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ConfigError(key, shown, f"finite weights ({name} holds nan or inf; float32 reaches ±3.4e38)")
    log.info("model weights from %s", shown if key == "trainer.init_from" else key)


def _checkpoint_to_resume(resume: Optional[str], checkpoint_dir: Path,
                          config: dict[str, Any]) -> Optional[tuple[Path, dict[str, Any]]]:
    """The checkpoint trainer.resume names and its state; None for a fresh start. Refuses whatever would
    overwrite the checkpoints already in `checkpoint_dir` with those of another run."""
    earlier = [checkpoint_dir / name for name in CHECKPOINT_NAMES if (checkpoint_dir / name).exists()]
    names = [path.name for path in earlier]
    listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    if resume is None:
        if earlier:
            raise ConfigError("trainer.resume", None, f"auto to carry on the run whose {listed} "
                              f"{'are' if len(earlier) > 1 else 'is'} in {checkpoint_dir} (a new run there would "
                              f"overwrite {'them' if len(earlier) > 1 else 'it'}), or a new hydra.run.dir")
        return None
    if resume == "auto":
        found = newest_readable(checkpoint_dir / "last.pt")
        if found is None and earlier and not _first_epoch_of_this_run(earlier, config):
            raise ConfigError("trainer.resume", "auto", f"a run directory with a last.pt to carry on from; "
                              f"{checkpoint_dir} holds only {listed}, which a new run would overwrite: use a new "
                              f"hydra.run.dir (trainer.init_from=PATH starts it from those weights)")
        if found is None:
            log.info("trainer.resume=auto: no last.pt in %s yet, so this run starts from the beginning",
                     checkpoint_dir)
        return found
    path = Path(resume)
    state = read(path, "trainer.resume", RESUME_KEYS)
    if earlier and path.resolve() not in [own.resolve() for own in earlier]:
        raise ConfigError("trainer.resume", resume, f"a checkpoint of this run directory, or a new hydra.run.dir: "
                          f"{checkpoint_dir} holds {listed} of another run, which this one would overwrite")
    return path, state


def _first_epoch_of_this_run(earlier: list[Path], config: dict[str, Any]) -> bool:
    """Whether the checkpoints are only the best.pt of this setup's first epoch, written by a run that saves
    last.pt too: the epoch writes best.pt, then last.pt, so a run killed, or stopped by a full disk, between the
    two leaves this. Starting over writes that best.pt again; trainer.resume=auto must not refuse to."""
    if [path.name for path in earlier] != ["best.pt"]:
        return False
    try:
        state = read(earlier[0], "trainer.resume", ("config", "engine"))
    except ConfigError:
        return False
    saved, engine = state["config"], state["engine"]
    trainer = saved.get("trainer") if isinstance(saved, dict) else None
    checkpoint = trainer.get("checkpoint") if isinstance(trainer, dict) else None
    return (isinstance(engine, dict) and engine.get("epoch") == 1 and isinstance(checkpoint, dict)
            and checkpoint.get("save_last") is True and setup_difference(saved, config) is None)


def newest_readable(last: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """last.pt, or, when it is missing or damaged, the last.pt it replaced (last.previous.pt), with its state.
    None when there is neither; the newest one's error when neither can be read."""
    candidates = [path for path in (last, previous_path(last)) if path.exists()]
    errors = []
    for path, fallback in zip(candidates, [*candidates[1:], None]):
        try:
            return path, read(path, "trainer.resume", RESUME_KEYS, inside=last.parent)
        except ConfigError as error:
            errors.append(error)
            if fallback is not None:
                log.warning("%s; falling back to %s", error, fallback)
    if errors:
        raise errors[0]
    return None


def _set_damaged_last_aside(last: Path, resumed_from: Path) -> None:
    """Resuming from the fallback: rename the damaged last.pt to last.damaged.pt, so that the next save does not
    keep it as the fallback in place of the good one."""
    if resumed_from != last and last.exists():
        damaged = last.with_name("last.damaged.pt")
        os.replace(last, damaged)
        log.warning("kept the unreadable %s as %s", last, damaged.name)


def read(path: Path, key: str, required: tuple[str, ...] = ("model",),
         inside: Optional[Path] = None) -> dict[str, Any]:
    """A checkpoint holding `required`, or a ConfigError naming the file: unreadable, truncated, altered since it was
    written, carrying pickled objects (weights_only=True refuses those without running them), not a regular file,
    or not one that train wrote. `inside`: the run directory a symlinked checkpoint must stay in."""
    try:
        state = load_checkpoint(path, inside=inside)
    except DamagedCheckpoint as damage:
        raise ConfigError(key, str(path), f"a readable checkpoint of plain values and tensors ({damage})") from None
    missing = [name for name in required if name not in state]
    if missing:
        raise ConfigError(key, str(path), f"a checkpoint written by train (this one has no {', '.join(missing)})")
    return state


def _check_trusted(state: dict[str, Any], key: str, path: str, own: dict[str, Any]) -> None:
    """A checkpoint whose config names code that neither the installed configs nor this run's own config name is
    refused, though train instantiates nothing from it: whatever reads it next might."""
    if "config" not in state:  # a bare state_dict: weights only
        return
    try:
        check_trusted(state["config"], state.get("choices"), config_dirs=command_config_dirs(), own=own)
    except Untrusted as untrusted:
        raise ConfigError(key, path, f"a checkpoint that names only trusted code ({untrusted})") from None


def setup_difference(saved: dict[str, Any], current: dict[str, Any]) -> Optional[str]:
    """The first setting the checkpoint depends on that differs: the model, the loss, the data and its split,
    the seed, the optimizer and the schedule. None when they all match."""
    for section in RESUMED_SECTIONS:
        old, new = saved.get(section), current.get(section)
        if section == "data" and isinstance(old, dict) and isinstance(new, dict):
            old, new = ({k: v for k, v in part.items() if k not in DATA_KEYS_FREE_TO_CHANGE} for part in (old, new))
        found = _first_difference(section, old, new)
        if found is not None:
            return found
    return None


def _first_difference(key: str, old: Any, new: Any) -> Optional[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new)):
            found = _first_difference(f"{key}.{name}", old.get(name), new.get(name))
            if found is not None:
                return found
        return None
    return None if old == new else f"{key} is {old!r} there, {new!r} here"
