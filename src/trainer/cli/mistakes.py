"""A user's mistake in one line: the key, the value and what is allowed, in place of Hydra's, OmegaConf's or a
component's multi-line report."""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Optional

from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from trainer.config import ConfigError
from trainer.vocabulary import install_command

TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def describe_mistake(error: ConfigError | InstantiationException, command: str = "train") -> str:
    """One line for a mistake found once a command runs. A loader or model that found the mistake itself (a
    missing column, tabular data for a CNN) raised a ConfigError, which Hydra's instantiate wraps: its message."""
    cause = error if isinstance(error, ConfigError) else error.__cause__
    return str(cause) if isinstance(cause, ConfigError) else describe_config_error(error, command)


PLUGIN_EXTRAS = {"hydra/launcher/submitit_slurm": ("hydra/launcher=slurm", "slurm"),
                 "hydra/sweeper/optuna": ("hparams_search=optuna", "optuna")}
"""The Hydra plugins' configs that the optional extras install: what asks for each, and the extra."""


def describe_config_error(error: Exception, command: str = "train") -> str:
    """One line for Hydra's and OmegaConf's composition errors: the key, the value and what is allowed."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file in PLUGIN_EXTRAS:
        option, extra = PLUGIN_EXTRAS[error.missing_cfg_file]
        return f"{option} needs the `{extra}` extra, which is not installed: {install_command(extra)}"
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return str(ConfigError(group, option, "one of " + ", ".join(sorted(error.options))))
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return f"{cause.full_key}: no such setting (`{command} --cfg job` lists the settings)"
    if isinstance(cause, ValidationError) and cause.full_key and dataclasses.is_dataclass(cause.object_type):
        declared = typing.get_type_hints(cause.object_type)[cause.key]
        return str(ConfigError(cause.full_key, cause.value, _describe_type(declared)))
    unparsed = _unparsed_override(error)
    if unparsed is not None:
        return unparsed
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        # "Error in call to target 'trainer.models.MLP':" + "MLP.__init__() got an unexpected keyword argument"
        return f"{str(error).splitlines()[0]} {type(error.__cause__).__name__}: {error.__cause__}"
    return " ".join(str(error).split("\n")[0].split())


def _unparsed_override(error: Exception) -> Optional[str]:
    """One line for an override Hydra's grammar cannot read (a quote, `=`, a letter outside ASCII) or reads as a
    list (a comma), saying how to quote it: `hydra.run.dir=/tmp/it's` -> hydra.run.dir='/tmp/it\\'s'. None for
    other errors."""
    if isinstance(error, OverrideParseException):
        override = error.override
    else:
        ambiguous = re.match(r"Ambiguous value for argument '(.*)'$", str(error).split("\n")[0])
        if ambiguous is None:
            return None
        override = ambiguous.group(1)
    key, equals, value = override.partition("=")
    if not equals or not re.fullmatch(r"[+~]{0,2}[\w.@/-]+", key):  # the key itself is the mistake
        return None
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # quoted, but not as the grammar wants
        value = value[1:-1]
    return str(ConfigError(key.lstrip("+~"), value, f"a value Hydra's override grammar can read: to pass it as one "
                                                    f"string, quote it whole, as {key}={quoted_for_hydra(value)} "
                                                    f"(inside your shell's own quotes)"))


def quoted_for_hydra(value: str) -> str:
    """`value` as a quoted string of Hydra's override grammar, which reads back as `value`: single quotes, with a
    quote escaped, and the backslashes before a quote or the closing quote doubled."""
    return "'" + re.sub(r"(\\*)('|$)", lambda found: found.group(1) * 2 + ("\\'" if found.group(2) else ""),
                        value) + "'"


def _describe_type(declared: Any) -> str:
    """int -> 'an integer', Optional[float] -> 'a number, or null'."""
    options = [t for t in typing.get_args(declared) if t is not type(None)] or [declared]
    described = TYPE_NAMES.get(options[0], getattr(options[0], "__name__", str(options[0])))
    return described + (", or null" if type(None) in typing.get_args(declared) else "")
