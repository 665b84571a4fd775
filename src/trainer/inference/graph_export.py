"""`train-export format=onnx` and `format=torchscript`: a checkpoint's model as one graph that runs without this
package, with what `predict` does around the model inside it.

The graph takes the samples as `predict` reads them, before any normalisation: images as uint8 pixels (N, C, H, W),
already converted to the training images' channels and resized to their height and width; tables as float32
features (N, *input_shape) in the data's units, in the order of the description's feature names. It normalises them
with the train split's statistics, runs the model, and returns what `predict` prints: a classifier's probabilities
(N, K), in the order of the class names (one logit, binary cross-entropy's, becomes the two probabilities); a
regression model's values (N, T) in the data's units. The batch size N is free. The file says so itself: ONNX in its
metadata (metadata_props), TorchScript in an extra file, trainer.json, that torch.jit.load(..., _extra_files=...)
reads.

ONNX comes from torch.export (the graph torch's own exporter is built on) and torch.onnx.export; TorchScript from
torch.jit.trace. A model is refused, in one line, where either cannot take it whole: a forward whose control flow
depends on the values of its input (`if x.max() > 1:` keeps, in a trace, the one branch the example took, and
torch.export refuses it), or an op ONNX lacks. Each graph is then run on samples of two batch sizes and compared
with the model in PyTorch (for ONNX, where onnxruntime is installed): a difference above MAX_DIFFERENCE refuses it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import warnings
from typing import Any

import torch
from torch import nn

from trainer.config import ConfigError
from trainer.data import DataDescription
from trainer.inference.trained_model import Trained
from trainer.training.losses import num_outputs
from trainer.vocabulary import install_command

GRAPH_FORMAT_VERSION = 1
"""The layout of the graph's inputs, outputs and description: what GRAPH_FORMAT_VERSION 1 says in the docstring."""
MAX_DIFFERENCE = 1e-4
"""The largest difference allowed between a graph's output and the model's in PyTorch, on the same samples: relative
to the size of values beyond 1 (_difference)."""
EXAMPLE_ROWS, CHECK_ROWS = 2, (5, 1)
"""The batch size the graph is built from (torch.export takes sizes 0 and 1 for constants), and those it is checked
with: another size, and a single sample, as `predict` of one image asks."""
ONNX_OPSET = 18
ONNX_PACKAGES = ("onnx", "onnxscript")
"""What torch.onnx.export needs beyond torch: the `onnx` extra installs them (and onnxruntime, for the check)."""


class Prepared(nn.Module):
    """The model between the preparation of its input and the reading of its output, as `predict` does both."""

    def __init__(self, model: nn.Module, description: DataDescription, outputs: int):
        super().__init__()
        self.model = model
        self.one_logit = outputs == 1 and description.task != "regression"  # binary cross-entropy's
        self.task, self.images = description.task, description.pixels is not None
        self.standardized = description.features is not None
        if self.images:  # as Normalize does it: x * (1 / std) + (-mean / std), per channel
            scale = 1 / description.pixels.std
            self.register_buffer("input_scale", scale[:, None, None])
            self.register_buffer("input_shift", (-description.pixels.mean * scale)[:, None, None])
        elif self.standardized:
            self.register_buffer("input_mean", torch.from_numpy(description.features.mean))
            self.register_buffer("input_std", torch.from_numpy(description.features.std))
        self.scaled_targets = description.targets is not None
        if self.scaled_targets:
            self.register_buffer("target_mean", torch.from_numpy(description.targets.mean))
            self.register_buffer("target_std", torch.from_numpy(description.targets.std))

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples.float()
        if self.images:
            x = x * self.input_scale + self.input_shift
        elif self.standardized:
            x = (x - self.input_mean) / self.input_std
        output = self.model(x).float()
        if self.task == "regression":
            return output * self.target_std + self.target_mean if self.scaled_targets else output
        # training.metrics.class_probabilities, with its branch on the output's width taken once, here in
        # __init__: a trace reads the width as a tensor, and would keep the branch of its one example.
        if self.one_logit:
            one = torch.sigmoid(output)
            return torch.cat([1 - one, one], dim=1)
        return torch.softmax(output, dim=1)


def described(description: DataDescription) -> dict[str, Any]:
    """What the graph takes and returns, in words and names: the graph's own description of itself."""
    shape = "N, " + ", ".join(str(size) for size in description.input_shape)
    takes = (f"uint8 pixels ({shape}), converted and resized as the training images were, not normalised"
             if description.pixels is not None else f"float32 features ({shape}) in the data's units, not standardised")
    returns = (f"float32 values (N, {description.num_targets}) in the data's units" if description.task == "regression"
               else f"float32 probabilities (N, {description.num_classes}), one per class, in the order of class_names")
    return {"format_version": GRAPH_FORMAT_VERSION, "input": takes, "output": returns, "task": description.task,
            "input_shape": list(description.input_shape), "class_names": description.class_names,
            "feature_names": description.feature_names}


def graph_names(description: DataDescription) -> tuple[str, str]:
    """The names of the graph's input and output."""
    return ("pixels" if description.pixels is not None else "features",
            "values" if description.task == "regression" else "probabilities")


def samples(description: DataDescription, rows: int, seed: int) -> torch.Tensor:
    """`rows` made-up samples as the graph takes them: random pixels, or features around the train split's mean."""
    generator = torch.Generator().manual_seed(seed)
    shape = (rows, *description.input_shape)
    if description.pixels is not None:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    noise = torch.randn(shape, generator=generator)
    if description.features is None:
        return noise
    return torch.from_numpy(description.features.mean) + noise * torch.from_numpy(description.features.std)


def exported_graph(format: str, trained: Trained, description: DataDescription) -> tuple[bytes, str]:
    """The content of the .onnx or .torchscript file for the checkpoint's model, and what its check found, in words.
    A model that cannot be exported, or whose graph computes something else, is a ConfigError naming `format`."""
    criterion, model = trained.model(description)
    prepared = Prepared(model, description, num_outputs(criterion, description)).eval()
    example = samples(description, EXAMPLE_ROWS, seed=0)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", FutureWarning)  # (torch deprecates TorchScript: README)
        if format == "onnx":
            content = _onnx(prepared, example, description)
            run = _onnx_runner(content)
            if run is None:
                return content, "not checked against PyTorch: onnxruntime is not installed"
        else:
            content = _torchscript(prepared, example, description)
            run = torch.jit.load(io.BytesIO(content))
        difference = max(_difference(run(checked), prepared(checked))
                         for checked in (samples(description, rows, seed=rows) for rows in CHECK_ROWS))
    if not difference <= MAX_DIFFERENCE:
        raise ConfigError("format", format, f"a format whose graph computes what the model does: on the same samples "
                                            f"the {format} graph's outputs differ from PyTorch's by up to "
                                            f"{difference:.3g} (at most {MAX_DIFFERENCE:g} allowed)")
    return content, f"its outputs differ from PyTorch's by at most {difference:.2g}"


def _difference(output: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest difference between the graph's outputs and PyTorch's: absolute up to 1 (probabilities), relative
    beyond (a regression's values in the data's units: float32 holds 5e5 only to 0.03, where kernels differ)."""
    return float(((output - expected).abs() / expected.abs().clamp(min=1)).max())


def _refused(format: str, reason: str) -> ConfigError:
    return ConfigError("format", format, f"a format this model can be exported to ({reason})")


def _onnx(prepared: Prepared, example: torch.Tensor, description: DataDescription) -> bytes:
    try:
        for package in ONNX_PACKAGES:
            importlib.import_module(package)
    except ImportError as error:
        raise _refused("onnx", f"{error.name} is not installed: {install_command('onnx')}") from None
    try:
        with _quiet():
            program = torch.export.export(prepared, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                          strict=False)
    except Exception as error:  # torch.export says why in its first lines, and where in the model's code
        raise _refused("onnx", f"torch.export cannot take its forward whole: {_first_reason(error)}") from None
    input_name, output_name = graph_names(description)
    try:
        with _quiet():
            graph = torch.onnx.export(program, dynamo=True, opset_version=ONNX_OPSET, input_names=[input_name],
                                      output_names=[output_name], verbose=False).model_proto
    except Exception as error:  # an op ONNX lacks: the exporter names it
        raise _refused("onnx", f"ONNX: {_first_reason(error)}") from None
    for value in (*graph.graph.input, *graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.doc_string = "A trainer model with the data's preparation: see the metadata's input and output."
    for key, value in described(description).items():
        graph.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    return graph.SerializeToString()


@contextlib.contextmanager
def _quiet():
    """No log records and no printing while it lasts: torch.export logs the graph it could not finish, and the ONNX
    exporter reports each of its passes. What went wrong comes back as the exception, which the refusal names."""
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _onnx_runner(content: bytes):
    """A function from a batch to the graph's outputs, run by onnxruntime; None where onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: torch.from_numpy(session.run(None, {name: batch.numpy()})[0])


def _torchscript(prepared: Prepared, example: torch.Tensor, description: DataDescription) -> bytes:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            traced = torch.jit.trace(prepared, (example,), check_trace=False)
        except Exception as error:
            raise _refused("torchscript", f"torch.jit.trace: {_first_reason(error)}") from None
    # torch's own modules pick a kernel by a tensor's flags as they trace (nn.MultiheadAttention's fast path): the
    # check against PyTorch covers those. A conversion in the model's own code is a branch or size the trace fixed.
    torch_folder = os.path.dirname(torch.__file__)
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning) and not warning.filename.startswith(torch_folder):
            what = str(warning.message).split(".")[0].lower()
            raise _refused("torchscript", f"{warning.filename}:{warning.lineno}: {what}, so a trace would keep the "
                                          f"branch or size of the one example it ran")
    content = io.BytesIO()
    torch.jit.save(traced, content, _extra_files={"trainer.json": json.dumps(described(description))})
    return content.getvalue()


def _first_reason(error: Exception) -> str:
    """The line of an exporter's long message that says what went wrong, and where in the model's code."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("<class ")), lines[0] if lines else type(error).__name__)
    reason = reason.split(": ", 1)[-1] if reason.startswith("<class ") else reason
    reason = reason.split(". ")[0].rstrip(".")  # its first sentence: the rest is advice to torch's developers
    where = next((line for line in lines if line.startswith("File ") and ", in " in line), None)
    return f"{reason} at {where[5:]}" if where else reason
