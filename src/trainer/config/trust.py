"""What a config read from a file may make this program call: a checkpoint's config chooses values, never code.

Hydra's `instantiate` calls whatever a `_target_` names, so a config that comes from a file (a checkpoint someone
shared) could name `builtins.open` or `os.system`. Every `_target_` in such a config must be one the person
running the command trusts: the component of the config group option the run was composed from (installed with
the package, or in the user's --config-dir), a component of the command's own config, or a class the command line
trusts by pattern (`trust=[my_pkg.*]`). Nothing else that Hydra reads as code may appear (`_args_`, `_recursive_`,
`_convert_`), and no interpolation (`${...}` would run a resolver): a checkpoint's config is saved resolved.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omegaconf import OmegaConf

from trainer.config.location import config_dir

COMPONENT_GROUPS = ("data", "model", "loss", "optimizer", "scheduler", "logger")
"""The config groups whose options name a `_target_`."""
PARTIAL_GROUPS = ("optimizer", "scheduler")
"""The groups whose component the run completes (with the model's parameters, the optimizer): the only places a
`_partial_: true` belongs. Elsewhere the command would get a function where it builds a model, a loss or the data."""
OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
PLAIN_TYPES = (str, int, float, bool, type(None))


class Untrusted(Exception):
    """A config from a file that names code the person running the command has not trusted, or is not plain data."""


def check_trusted(saved: Any, choices: Any, patterns: Optional[Sequence[str]] = None,
                  config_dirs: Sequence[Path] = (), own: Optional[dict[str, Any]] = None) -> None:
    """Raise Untrusted unless every `_target_` in `saved` (a run's resolved config, as read from a file) is trusted:
    the one of the option `choices` names for its group in `config_dirs` (any option of the group when the file
    records no choice), the one at the same place in `own` (the command's own config), or one matching a
    `patterns` glob (the command's `trust`; None for a command that has no such option). `saved` must be plain
    data: dicts with string keys, lists, strings, numbers, booleans, null."""
    if not isinstance(saved, dict):
        raise Untrusted(f"its config is a {type(saved).__name__}, not a mapping of settings")
    try:
        nodes = list(_nodes(saved, ""))
    except RecursionError:
        raise Untrusted("its config is nested too deeply to be a run's") from None
    installed = installed_targets(config_dirs)
    chosen = _checked_choices(choices, installed)
    for path, node in nodes:
        for key in node:
            if key.startswith("_") and key.endswith("_") and key not in ("_target_", "_partial_"):
                raise Untrusted(f"its {_join(path, key)} asks Hydra to {key.strip('_')}, which no installed config "
                                f"does")
        if "_partial_" in node and not isinstance(node["_partial_"], bool):
            raise Untrusted(f"its {_join(path, '_partial_')} is {node['_partial_']!r}, not true or false")
        if node.get("_partial_") is True and path not in PARTIAL_GROUPS:
            raise Untrusted(f"its {_join(path, '_partial_')} is true, where no installed config defers a call (only "
                            f"{' and '.join(PARTIAL_GROUPS)} do)")
        if "_target_" in node:
            _check_target(path, node["_target_"], chosen, installed, patterns, own)


def _nodes(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every mapping in `value` with its dotted path, once each value is known to be plain data."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not OPTION_NAME.fullmatch(key.strip("_") or "_"):
                raise Untrusted(f"its config has the key {key!r} under {path or 'the top'}, not a setting's name")
        yield path, value
        for key, item in value.items():
            yield from _nodes(item, _join(path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _nodes(item, f"{path}[{index}]")
    elif isinstance(value, str) and "${" in value:
        raise Untrusted(f"its {path} is the interpolation {value!r}, where a saved config holds resolved values")
    elif not isinstance(value, PLAIN_TYPES):
        raise Untrusted(f"its {path} is a {type(value).__name__}, not a plain value")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def installed_targets(config_dirs: Sequence[Path]) -> dict[str, dict[str, Optional[str]]]:
    """Per component group, each option's `_target_` (None for an option without one, e.g. scheduler=none), from
    the YAML files of `config_dirs`: the package's configs and the user's --config-dir, both chosen by the person
    running the command. The first folder that has an option wins, as in Hydra's search path."""
    found: dict[str, dict[str, Optional[str]]] = {group: {} for group in COMPONENT_GROUPS}
    for folder in config_dirs:
        for group in COMPONENT_GROUPS:
            for option_file in sorted((Path(folder) / group).glob("*.yaml")):
                if option_file.stem not in found[group]:
                    option = OmegaConf.load(option_file)
                    found[group][option_file.stem] = option.get("_target_") if hasattr(option, "get") else None
    return found


def _checked_choices(choices: Any, installed: dict[str, dict[str, Optional[str]]]) -> dict[str, str]:
    """The options the file says its run was composed from, of the component groups; each must be installed."""
    if choices is None:
        return {}
    if not isinstance(choices, dict) or not all(isinstance(option, (str, type(None))) for option in choices.values()):
        raise Untrusted(f"its config group choices are {choices!r}, not a mapping of group to option")
    chosen = {group: option for group, option in choices.items() if group in COMPONENT_GROUPS and option is not None}
    for group, option in chosen.items():
        if option not in installed[group]:
            shown = option if OPTION_NAME.fullmatch(option) else repr(option)
            raise Untrusted(f"its run was composed with {group}={shown}, which is not an installed option (one of "
                            f"{', '.join(installed[group])}); give the --config-dir that holds it, as for training")
    return chosen


def _check_target(path: str, target: Any, chosen: dict[str, str], installed: dict[str, dict[str, Optional[str]]],
                  patterns: Optional[Sequence[str]], own: Optional[dict[str, Any]]) -> None:
    if not isinstance(target, str):
        raise Untrusted(f"its {_join(path, '_target_')} is {target!r}, not the name of a class or function")
    if target == _target_at(own, path):
        return
    if _matches(target, patterns):
        defined = _defining_name(target)
        if _matches(defined, patterns):
            return
        raise Untrusted(f"its {_join(path, '_target_')} is {target!r}, which `trust` matches, but it leads to "
                        f"{defined or 'an object of no module'}, reached through an import: `trust` names code where "
                        f"it is defined")
    if path in chosen and installed[path][chosen[path]] == target:
        return
    if path in installed and path not in chosen and target in installed[path].values():
        return
    where = (f"where the {path}={chosen[path]} option installs {installed[path][chosen[path]]}" if path in chosen
             else f"which no installed {path} option names" if path in installed
             else "where no installed config has a component")
    trusting = (f"say so on the command line: trust=[{target}]" if patterns is not None
                else f"name it in this run's config: {_join(path, '_target_')}={target}")
    raise Untrusted(f"its {_join(path, '_target_')} is {target!r}, {where}: a checkpoint runs no code of its own; "
                    f"if you trust that code, {trusting}")


def _matches(name: Optional[str], patterns: Optional[Sequence[str]]) -> bool:
    return name is not None and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns or ())


def _defining_name(target: str) -> Optional[str]:
    """The module and name the object `target` leads to was defined under: trust=[my_pkg.*] trusts my_pkg's own
    code, yet the glob also matches my_pkg.os.system and my_pkg.torch.save, other modules' functions reached through
    my_pkg's imports. The target itself when it cannot be imported (instantiate reports that), None for an object
    that has no such name (my_pkg.Net.__init__.__globals__)."""
    from hydra.utils import get_object

    try:
        found = get_object(target)
    except ImportError:
        return target
    module, name = getattr(found, "__module__", None), getattr(found, "__qualname__", None)
    return f"{module}.{name}" if isinstance(module, str) and isinstance(name, str) else None


def _target_at(config: Optional[dict[str, Any]], path: str) -> Any:
    """The `_target_` at dotted `path` of `config`; None where there is none."""
    node: Any = config
    for key in path.split(".") if path else []:
        node = node.get(key) if isinstance(node, dict) else None
    return node.get("_target_") if isinstance(node, dict) else None


def command_config_dirs() -> list[Path]:
    """The folders of YAML configs the running command composes from: the package's, and the user's --config-dir
    (Hydra's search path); the package's alone outside a Hydra command."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [config_dir()]
    sources = HydraConfig.get().runtime.config_sources
    return [*(Path(source.path) for source in sources if source.schema == "file"), config_dir()]
