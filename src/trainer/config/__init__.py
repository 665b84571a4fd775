"""Typed settings for the engine and the checks that run before any tensor exists.

The `trainer` config group is the dataclass `TrainerConfig` (schema): Hydra merges the YAML onto it, so a wrong
type fails at compose time and the defaults live there, once. The other groups point `_target_` at torch's classes
or ours; `validate` (validation) checks their values against the `RULES` table (rules), so that a bad value is one
`ConfigError` (errors) naming the key, the value and what is allowed, before torch is imported and before anything
is written. `config_dir` (location) finds the YAML those groups are composed from. A config read from a file (a
checkpoint's) may name only the `_target_`s the person running the command trusts (trust).
"""

from trainer.config.errors import ConfigError
from trainer.config.location import config_dir
from trainer.config.rules import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, RULES, Rule, is_finite_number
from trainer.config.schema import COMPILE_MODES, MATMUL_PRECISIONS, TrainerConfig
from trainer.config.sections import CheckpointConfig, EarlyStoppingConfig, HealthConfig, LrFindConfig
from trainer.config.validation import check_task_fit, validate

__all__ = [
    "COMPILE_MODES",
    "MATMUL_PRECISIONS",
    "NON_NEGATIVE_INT",
    "POSITIVE",
    "POSITIVE_INT",
    "RULES",
    "CheckpointConfig",
    "ConfigError",
    "EarlyStoppingConfig",
    "HealthConfig",
    "LrFindConfig",
    "Rule",
    "TrainerConfig",
    "check_task_fit",
    "config_dir",
    "is_finite_number",
    "validate",
]
