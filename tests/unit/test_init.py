"""The package itself: `import trainer` stays light, and the Python API it names comes when first asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import trainer
from trainer.cli import python_api

HEAVY = ("torch", "hydra", "omegaconf")

IMPORTED_AFTER = """
import json, sys
import trainer
imported = sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))
print(json.dumps(imported))
"""


def test_import_trainer_imports_neither_torch_nor_hydra():
    result = subprocess.run([sys.executable, "-c", IMPORTED_AFTER, *HEAVY], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("name", trainer.__all__)
def test_each_public_name_is_the_python_api_s(name):
    assert getattr(trainer, name) is getattr(python_api, name)


def test_another_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'trainer' has no attribute 'trian'"):
        trainer.trian
