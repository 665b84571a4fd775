"""check_trusted: a config read from a file may name only the code its recorded options install, the command's own,
or what `trust=[glob]` trusts; a glob trusts a package's own code, not what it imports.
(tests/e2e/test_crafted_checkpoints.py gives every command crafted checkpoints.)"""

from __future__ import annotations

import os
import sys

import pytest

from trainer.config.trust import Untrusted, check_trusted, installed_targets
from trainer.config import config_dir


def test_a_user_s_own_model_is_refused_naming_the_key_the_target_and_how_to_trust_it():
    saved = {"model": {"_target_": "my_pkg.nets.Net", "width": 8}, "loss": {"_target_": "torch.nn.MSELoss"}}
    with pytest.raises(Untrusted) as refused:
        check_trusted(saved, {"model": "mlp"}, patterns=[], config_dirs=[config_dir()])
    assert str(refused.value) == ("its model._target_ is 'my_pkg.nets.Net', where the model=mlp option installs "
                                  "trainer.models.MLP: a checkpoint runs no code of its own; if you trust that code, "
                                  "say so on the command line: trust=[my_pkg.nets.Net]")
    check_trusted(saved, {"model": "mlp"}, patterns=["my_pkg.*"], config_dirs=[config_dir()])
    check_trusted(saved, {"model": "mlp"}, config_dirs=[config_dir()], own={"model": {"_target_": "my_pkg.nets.Net"}})


def test_an_option_of_the_user_s_config_dir_is_trusted_where_the_command_is_given_that_dir(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: my_pkg.Net\nwidth: 8\n")
    saved = {"model": {"_target_": "my_pkg.Net", "width": 8}}
    with pytest.raises(Untrusted, match="model=mine, which is not an installed option"):
        check_trusted(saved, {"model": "mine"}, config_dirs=[config_dir()])
    check_trusted(saved, {"model": "mine"}, config_dirs=[tmp_path, config_dir()])


def test_without_recorded_choices_any_installed_option_of_the_group_is_trusted():
    """Checkpoints of train 0.1 record no choices: their targets are checked against every option of the group."""
    targets = installed_targets([config_dir()])
    assert targets["model"]["mlp"] == "trainer.models.MLP" and targets["scheduler"]["none"] is None
    check_trusted({"model": {"_target_": "trainer.models.ResNet"}}, None, config_dirs=[config_dir()])
    with pytest.raises(Untrusted, match="which no installed model option names"):
        check_trusted({"model": {"_target_": "torch.nn.MSELoss"}}, None, config_dirs=[config_dir()])


def test_a_trusted_glob_trusts_a_package_s_own_code_not_the_modules_it_imports(tmp_path, monkeypatch):
    """trust=[my_nets.*] matched my_nets.torch.save: a checkpoint's loss(obj=..., f=PATH) wrote any file."""
    (tmp_path / "my_nets.py").write_text("import os\n\nimport torch\n\n\nclass Net(torch.nn.Module):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)
    for reached, defined in [("my_nets.torch.save", "torch.serialization.save"),
                             ("my_nets.os.system", f"{os.system.__module__}.system"),
                             ("my_nets.Net.__init__.__globals__", "an object of no module")]:
        with pytest.raises(Untrusted, match=f"its loss._target_ is '{reached}', which `trust` matches, but it leads "
                                            f"to {defined}, reached through an import"):
            check_trusted({"loss": {"_target_": reached, "obj": 1, "f": str(tmp_path / "marker")}}, None,
                          patterns=["my_nets.*"], config_dirs=[config_dir()])
    check_trusted({"model": {"_target_": "my_nets.Net"}}, None, patterns=["my_nets.*"], config_dirs=[config_dir()])
    assert not (tmp_path / "marker").exists()

