"""The sweeps' configs: `hparams_search=optuna`'s search space names real settings with values they accept, and
runs and sweeps started in the same second get directories of their own. (tests/e2e/test_sweeps.py runs sweeps.)"""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import OmegaConf

from helpers.sweeps import compose_search, search_space
from trainer.config import RULES, config_dir
from trainer.vocabulary import METRICS_MAXIMISED


def test_every_searched_key_is_a_setting_and_every_searched_value_passes_its_rule():
    cfg = compose_search()
    space = search_space(cfg)

    assert set(space) == {"optimizer.lr", "data.batch_size", "model.hidden_sizes", "model.dropout"}
    for key, allowed in space.items():
        parent, _, leaf = key.rpartition(".")
        assert leaf in OmegaConf.select(cfg, parent), f"{key} is searched but not a setting of the composed config"
        values = [allowed.start, allowed.end] if isinstance(allowed, IntervalSweep) else allowed
        assert all(RULES[key].accepts(value) for value in values), (key, values, RULES[key].allowed)
    assert cfg.model._target_ == "trainer.models.MLP"
    assert cfg.hydra.mode.name == "MULTIRUN"  # so that `-m` is optional
    # The objective is the best value of the monitored metric: the default one is minimised.
    assert cfg.trainer.early_stopping.monitor not in METRICS_MAXIMISED
    assert cfg.hydra.sweeper.direction == "minimize"


def test_a_model_on_the_command_line_replaces_the_searchs_model():
    assert compose_search("model=dropout_net").model._target_ == "trainer.models.DropoutNet"


def test_runs_and_sweeps_started_in_the_same_second_get_directories_of_their_own():
    def directories() -> tuple[str, str]:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", return_hydra_config=True)
        return str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)  # ${now:...} resolved, as Hydra resolves it

    first, second = directories(), directories()  # a few milliseconds apart
    assert first[0] != second[0] and first[1] != second[1]
