"""A user's mistake as a ConfigError: the key it names and the value it shows."""

from __future__ import annotations

from trainer.config import ConfigError


def assert_names_key_and_value(error: ConfigError, key: str, value_text: str) -> None:
    assert error.key == key
    assert str(error).startswith(f"{key}: got {value_text}, expected "), str(error)
