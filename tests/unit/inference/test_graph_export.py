"""`train-export format=onnx` and `format=torchscript`: the graph takes raw samples and gives `predict`'s answer, for
every model and kind of data that can be exported; a model that cannot be is refused in one line saying why. Runs are
trained in-process, once per module. (tests/e2e/test_checkpoint_commands.py runs the command.)"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image

from helpers.trained_runs import best_checkpoint, compose_command, train_tiny_runs
from trainer.config import ConfigError
from trainer.data import DataDescription
from trainer.inference import graph_export
from trainer.inference.export import main as export
from trainer.inference.prediction import description_of, predict
from trainer.inference.trained_model import load
from trainer.models import MLP

SMALL_MLP = ("model.hidden_sizes=[16]",)
RUNS = {
    "mlp": ("model=mlp", *SMALL_MLP),
    "dropout_net": ("model=dropout_net", *SMALL_MLP),
    "transformer": ("model=transformer", "model.d_model=8", "model.num_heads=2", "model.num_layers=1",
                    "model.dim_feedforward=16"),
    "resnet": ("data=mnist", "model=resnet", "model.channels=[4]", "model.blocks_per_stage=1"),  # uint8 pixels
    "binary": ("data=moons", *SMALL_MLP),  # one logit (binary cross-entropy), standardised features
    "regression": ("data=regression", "data.n_samples=300", *SMALL_MLP),  # values in the data's units
    "branching": ("data=moons", *SMALL_MLP, "model._target_=test_graph_export.RescalingMLP"),
}
EXPORTABLE = [name for name in RUNS if name != "branching"]


class RescalingMLP(MLP):
    """An MLP that scales a batch down when any input is out of range: control flow that depends on the values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 10:
            x = x / x.abs().max()
        return super().forward(x)


BRANCH_LINE = inspect.getsourcelines(RescalingMLP.forward)[1] + 1
"""The line of RescalingMLP's `if`."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, offline_data_sets) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("runs"), {name: ("trainer.max_epochs=1", *overrides)
                                                             for name, overrides in RUNS.items()},
                           tiny=("trainer.device=cpu", "trainer.curves=false"))


def exported_to(run_dir: Path, format: str, *overrides: str) -> Path:
    export(compose_command("export", f"ckpt_path={best_checkpoint(run_dir)}", f"format={format}", *overrides))
    return best_checkpoint(run_dir).with_suffix(f".{format}")


def predicted(run_dir: Path, folder: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Raw samples of the run's data written as files `predict` reads (PNG images, or JSON rows of features), and
    `predict`'s answer for them: (N, K) probabilities or (N, T) values, in the order of the samples."""
    trained = load(compose_command("predict", f"ckpt_path={best_checkpoint(run_dir)}", "device=cpu"))
    description = description_of(trained)
    raw = graph_export.samples(description, 5, seed=7)
    if description.pixels is not None:
        for number, image in enumerate(raw):
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{number}.png")
        source = folder
    else:
        source = folder / "rows.json"
        rows = raw.reshape(len(raw), -1).tolist()  # (digits' features have the shape (1, 8, 8))
        source.write_text(json.dumps([dict(zip(description.feature_names, row)) for row in rows]))
    answers = sorted(predict(trained, source), key=lambda prediction: prediction.sample)
    return raw, np.array([prediction.values or list(prediction.probabilities.values()) for prediction in answers])


@pytest.mark.parametrize("name", EXPORTABLE)
def test_the_onnx_graph_takes_raw_samples_and_gives_predict_s_answer(runs, tmp_path, name):
    graph = exported_to(runs[name], "onnx")
    raw, expected = predicted(runs[name], tmp_path)

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (given,), (returned,) = session.get_inputs(), session.get_outputs()
    (output,) = session.run(None, {given.name: raw.numpy()})

    assert np.abs(output - expected).max() <= 1e-4
    images, regression = given.name == "pixels", name == "regression"
    assert (given.name, given.type, returned.name) == (("pixels", "tensor(uint8)") if images else
                                                       ("features", "tensor(float)")) + \
        ("values" if regression else "probabilities",)
    assert given.shape[0] == returned.shape[0] == "batch"
    metadata = {entry.key: entry.value for entry in onnx.load(str(graph)).metadata_props}
    assert metadata["output"].startswith("float32 values" if regression else "float32 probabilities")
    assert json.loads(metadata["input_shape"]) == list(raw.shape[1:])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # (torch's word on TorchScript)
@pytest.mark.parametrize("name", EXPORTABLE)
def test_the_torchscript_graph_loads_with_torch_alone_and_gives_predict_s_answer(runs, tmp_path, name):
    graph = exported_to(runs[name], "torchscript")
    raw, expected = predicted(runs[name], tmp_path)

    extra_files = {"trainer.json": ""}
    loaded = torch.jit.load(str(graph), _extra_files=extra_files)
    with torch.inference_mode():
        output = loaded(raw).numpy()

    assert np.abs(output - expected).max() <= 1e-4
    assert json.loads(extra_files["trainer.json"])["input_shape"] == list(raw.shape[1:])


@pytest.mark.parametrize("format, reason", [
    ("onnx", "torch.export cannot take its forward whole: Could not guard on data-dependent expression"),
    ("torchscript", f"test_graph_export.py:{BRANCH_LINE}: converting a tensor to a python boolean might cause the "
                    "trace to be incorrect, so a trace would keep the branch or size of the one example it ran"),
])
def test_a_forward_that_branches_on_its_input_s_values_is_refused_saying_where(runs, format, reason):
    with pytest.raises(ConfigError) as refused:
        exported_to(runs["branching"], format, "trust=[test_graph_export.*]")

    assert str(refused.value).startswith(f"format: got '{format}', expected a format this model can be exported to (")
    assert reason in str(refused.value)
    if format == "onnx":
        assert f"test_graph_export.py\", line {BRANCH_LINE}, in forward" in str(refused.value)
    assert not best_checkpoint(runs["branching"]).with_suffix(f".{format}").exists()


def test_a_graph_whose_outputs_differ_from_pytorch_s_is_refused_saying_by_how_much(runs, monkeypatch):
    monkeypatch.setattr(graph_export, "MAX_DIFFERENCE", -1.0)  # no graph is that close

    with pytest.raises(ConfigError, match=r"^format: got 'torchscript', expected a format whose graph computes what "
                                          r"the model does: on the same samples the torchscript graph's outputs "
                                          r"differ from PyTorch's by up to 0 \(at most -1 allowed\)$"):
        exported_to(runs["mlp"], "torchscript", "output=elsewhere.torchscript")
    assert not Path("elsewhere.torchscript").exists()


def test_without_the_onnx_extra_the_refusal_names_it(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it raises ImportError

    with pytest.raises(ConfigError, match=r"\(onnxscript is not installed: pip install "
                                          r"\"hydra-torch-trainer\[onnx\]\"\)$"):
        exported_to(runs["mlp"], "onnx")


def test_without_onnxruntime_the_graph_is_written_and_said_to_be_unchecked(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)

    graph = exported_to(runs["binary"], "onnx")

    assert capsys.readouterr().out.endswith(f"to {graph}; not checked against PyTorch: onnxruntime is not "
                                            f"installed\n")
    onnx.checker.check_model(onnx.load(str(graph)))


def test_the_graph_s_description_says_what_it_takes_and_returns():
    plain = {"task": "multiclass", "input_shape": [1, 8, 8], "num_classes": 3, "num_targets": None,
             "class_names": ["a", "b", "c"], "feature_names": None, "pixels": {"mean": [100.0], "std": [50.0]},
             "features": None, "targets": None}
    assert graph_export.described(DataDescription.from_plain(plain)) == {
        "format_version": 1, "task": "multiclass", "input_shape": [1, 8, 8], "class_names": ["a", "b", "c"],
        "feature_names": None,
        "input": "uint8 pixels (N, 1, 8, 8), converted and resized as the training images were, not normalised",
        "output": "float32 probabilities (N, 3), one per class, in the order of class_names"}


def test_values_in_the_hundreds_of_thousands_are_checked_relative_to_their_size(tmp_path, offline_data_sets):
    """House prices: float32 holds 5e5 to 0.03, so ONNX's kernels and PyTorch's differ there by that much."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 3))
    prices = 5e5 + 1e5 * features @ np.array([1.0, 2.0, -1.0])
    np.savetxt(tmp_path / "houses.csv", np.c_[features, prices], delimiter=",", header="a,b,c,price", comments="")
    run = train_tiny_runs(tmp_path, {"houses": ("data=csv", f"data.path={tmp_path / 'houses.csv'}",
                                                "data.target=price", *RUNS["transformer"])},
                          tiny=("trainer.device=cpu", "trainer.curves=false", "trainer.max_epochs=1"))["houses"]

    graph = exported_to(run, "onnx")

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"features": features[:5].astype(np.float32)})
    assert output.shape == (5, 1) and np.all(np.abs(output) > 1e4)
