"""Starting a run from a checkpoint: continuing it exactly (trainer.resume) or taking its weights (init_from).

A checkpoint only fits the config it was written with where that decides the tensors' shapes or which samples
are trained on, so those parts must match; anything else (max_epochs, the device, the pipeline) may change.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Optional

from trainer.checkpoint import load_checkpoint, previous_path
from trainer.config import ConfigError, TrainerConfig
from trainer.data import Batcher
from trainer.engine import Engine

log = logging.getLogger(__name__)

# Data settings that may change between a run and its continuation: where the files are and how batches travel.
DATA_KEYS_FREE_TO_CHANGE = ("root", "download", "pipeline", "num_workers", "pin_memory")


def start_from_checkpoints(settings: TrainerConfig, engine: Engine, train: Batcher, run_dir: Path) -> None:
    """Apply trainer.init_from or trainer.resume to a freshly built engine, before it fits."""
    if settings.init_from is not None:
        state = read(Path(settings.init_from), "trainer.init_from")
        try:
            engine.model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ConfigError("trainer.init_from", settings.init_from,
                              f"a checkpoint of this model ({str(error).splitlines()[-1].strip()})") from None
        log.info("model weights from %s", settings.init_from)
    if settings.resume is None:
        _refuse_to_overwrite(run_dir / settings.checkpoint.dir)
        return
    if settings.resume == "auto":
        last = run_dir / settings.checkpoint.dir / "last.pt"
        found = newest_readable(last)
        if found is None:
            log.info("trainer.resume=auto: no %s yet, so this run starts from the beginning", last)
            return
        path, state = found
    else:
        path = Path(settings.resume)
        state = read(path, "trainer.resume")
    difference = setup_difference(state.get("config", {}), engine.config)
    if difference is not None:
        raise ConfigError("trainer.resume", str(path), f"a checkpoint of this config ({difference})")
    engine.load_state_dict(state, train)
    log.info("resumed from %s: %d epochs and %d steps done", path, engine.epoch, engine.global_step)


def _refuse_to_overwrite(checkpoint_dir: Path) -> None:
    """A new run in the directory of an earlier one would overwrite that run's checkpoints: refuse it."""
    earlier = [name for name in ("last.pt", "best.pt") if (checkpoint_dir / name).exists()]
    if earlier:
        raise ConfigError("trainer.resume", None, f"auto to carry on the run whose {' and '.join(earlier)} "
                          f"{'are' if len(earlier) > 1 else 'is'} in {checkpoint_dir} (a new run there would "
                          f"overwrite {'them' if len(earlier) > 1 else 'it'}), or a new hydra.run.dir")


def newest_readable(last: Path) -> Optional[tuple[Path, dict[str, Any]]]:
    """last.pt, or, when it is missing or damaged, the last.pt it replaced (last.previous.pt), with its state.
    None when there is neither; the newest one's error when neither can be read."""
    candidates = [path for path in (last, previous_path(last)) if path.exists()]
    errors = []
    for path, fallback in zip(candidates, [*candidates[1:], None]):
        try:
            return path, read(path, "trainer.resume")
        except ConfigError as error:
            errors.append(error)
            if fallback is not None:
                log.warning("%s; falling back to %s", error, fallback)
    if errors:
        raise errors[0]
    return None


def read(path: Path, key: str) -> dict[str, Any]:
    """A checkpoint, or a ConfigError naming the file: unreadable, truncated, or carrying pickled objects
    (weights_only=True refuses those without running them)."""
    try:
        state = load_checkpoint(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        # torch's first sentence says what is wrong ("... failed finding central directory"); the rest is advice.
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise ConfigError(key, str(path), f"a readable checkpoint of plain values and tensors ({reason})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ConfigError(key, str(path), "a checkpoint written by train (a dict with the model's weights)")
    return state


def setup_difference(saved: dict[str, Any], current: dict[str, Any]) -> Optional[str]:
    """The first setting the checkpoint depends on that differs: the model, the loss, the data and its split,
    the seed. None when they all match."""
    for section in ("model", "loss", "data", "seed"):
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
