"""The model summary logged at the start of a run: every layer, its output shape, the parameters."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config, options
from trainer.observe.model_summary import layer_rows, summary_table
from trainer.run import build


@pytest.mark.parametrize("model", options("model"))
def test_every_model_has_rows_whose_parameters_add_up_and_whose_last_layer_gives_the_outputs(model):
    cfg = compose_config(f"model={model}")
    network = instantiate(cfg.model, input_shape=(1, 8, 8), num_outputs=10)
    rows = layer_rows(network, torch.randn(2, 1, 8, 8))

    assert sum(row.parameters for row in rows) == sum(p.numel() for p in network.parameters())
    assert rows[-1].output_shape == (2, 10)
    assert len({row.name for row in rows}) == len(rows)


def test_the_mlp_table_lists_each_hidden_layer_with_its_shape_and_parameters():
    network = instantiate(compose_config("model.hidden_sizes=[32,16]").model, input_shape=(1, 8, 8), num_outputs=10)
    table = summary_table(network, torch.randn(2, 1, 8, 8)).splitlines()

    assert table[0].split() == ["layer", "type", "output", "shape", "parameters"]
    assert table[1].split() == ["hidden.0", "HiddenLayer", "(B,", "32)", f"{64 * 32 + 32:,}"]
    assert table[2].split() == ["hidden.1", "HiddenLayer", "(B,", "16)", f"{32 * 16 + 16}"]
    assert table[3].split() == ["head", "Linear", "(B,", "10)", f"{16 * 10 + 10}"]
    assert table[4].startswith("2,778 parameters (2,778 trainable), 0.01 MB; input (B, 1, 8, 8)")


def test_parameters_the_model_holds_itself_get_a_row_and_the_model_stays_in_training_mode():
    network = instantiate(compose_config("model=transformer").model, input_shape=(1, 8, 8), num_outputs=10)
    network.train()
    rows = layer_rows(network, torch.randn(2, 1, 8, 8))

    assert rows[0].name == "(own)" and rows[0].parameters == network.position.numel()
    assert network.training


def test_a_run_logs_the_summary_before_it_trains(run_dir, caplog):
    caplog.set_level(logging.INFO, logger="trainer.run")
    build(compose_config("data=xor", "model.hidden_sizes=[8]"), run_dir)

    assert any(r.getMessage().startswith("layer ") and "hidden.0  HiddenLayer  (B, 8)" in r.getMessage()
               for r in caplog.records)
