"""The packages' layering, as ARCHITECTURE.md draws it: each part of trainer imports only the parts below it, so
that the data flow of a run reads one way and no two packages lean on each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trainer

PACKAGE = Path(trainer.__file__).parent
LAYERS = [
    {"vocabulary", "moved_modules"},  # the shared words; the old module paths
    {"config"},  # schema, rules, validation, trust of configs read from files
    {"data", "models"},  # the samples as tensors; the networks
    {"training"},  # the engine, the step and what a run's state rests on
    {"observe"},  # what a run shows and records
    {"run_directory"},  # the run directory's one owner
    {"run"},  # the composition root
    {"inference", "cluster"},  # a trained model put to use; Slurm
    {"cli"},  # the commands
    {"__init__", "__main__"},  # the package itself; python -m trainer
]
LAYER_OF = {part: depth for depth, layer in enumerate(LAYERS) for part in layer}


def part_of(module: str) -> str:
    """trainer.training.engine -> training; trainer.run -> run."""
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    """Every trainer module `path` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer"):
            found |= ({node.module} if node.module != "trainer" else
                      {f"trainer.{alias.name}" for alias in node.names if alias.name != "__version__"})
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("trainer.")}
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer():
    parts = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in SOURCES}
    assert parts - {"configs"} == set(LAYER_OF)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_own_part_and_the_layers_below(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = sorted(module for module in imports_of(path)
                    if part_of(module) != own and LAYER_OF[part_of(module)] >= LAYER_OF[own])
    assert upward == [], f"{own} (layer {LAYER_OF[own]}) imports from its layer or above"
