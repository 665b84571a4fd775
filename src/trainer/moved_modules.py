"""The module paths that configs name, kept where the code has moved: `trainer.losses.for_task` is in users'
configs and in every checkpoint's config (a `_target_`), so it imports as the module that now holds that code.
Nothing is imported before it is asked for: `train --help` stays free of torch."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Optional, Sequence

MOVED_MODULES = {
    "trainer.losses": "trainer.training.losses",
    "trainer.schedules": "trainer.training.schedules",
    "trainer.loggers": "trainer.observe.loggers",
    "trainer.slurm": "trainer.cluster.slurm_callback",
}
"""Public path (a `_target_`'s module) -> the module that holds its code."""


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports each public path of MOVED_MODULES as its module itself (one module object, two names)."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED_MODULES[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = module.__spec__.loader_state  # the import gave it the public path's spec: its own back


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
