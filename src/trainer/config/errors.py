"""The one error of a setting that cannot work, raised by the schema, the rules and the checks of the other modules
alike, so that the command line prints every one of them the same way."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work. The message names the key, the value given and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: got {value!r}, expected {allowed}")


def one_of(key: str, value: Any, choices: tuple) -> None:
    """Refuse `value` for `key` unless it is one of `choices`, listing them."""
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))
