"""The `evaluate` command: a checkpoint's test metrics again, and for classifiers its confusion matrix.

It goes the way the run's own test went: the data from the config saved in the checkpoint (build_data), the model
that config describes (run.build_model), the test batches at the run's trainer.eval_batch_size (run.batchers) and
the engine's outputs and metrics (engine.outputs_and_targets, metrics.split_metrics). On the device the run
trained on, the figures are summary.json's "test" exactly. The results are printed, and written to
evaluation.json, and for classifiers confusion.png, in RUN_DIR/evaluation/<checkpoint name>/ (or output_dir).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from trainer.data import batchers, build_data
from trainer.inference.trained_model import Trained, load
from trainer.observe.summary import metric_lines
from trainer.observe.text_table import aligned
from trainer.training.metrics import confusion_matrix, split_metrics
from trainer.training.outputs import outputs_and_targets

CONFUSION_PNG = "confusion.png"
MAX_CLASSES_ANNOTATED = 30
"""confusion.png writes the count in each cell up to this many classes; beyond, the colours alone show them."""


@dataclass
class Evaluation:
    test: dict[str, float]
    """As summary.json's "test": loss and accuracy, or loss, mse, rmse and r2."""
    samples: int
    """Test samples evaluated."""
    class_names: Optional[list[str]] = None
    """Classifiers: the name of class index 0..K-1."""
    confusion_matrix: Optional[list[list[int]]] = None
    """Classifiers: (K, K) counts, row i column j the test samples of class i predicted as class j."""


def evaluate(trained: Trained) -> Evaluation:
    """The test split's metrics with the checkpoint's weights (and for classifiers the confusion matrix)."""
    config = trained.config
    data = build_data(config.data)
    described = data.description
    criterion, model = trained.model(described)
    *_, test = batchers(config.data, data, model, trained.device, config.seed, config.trainer.eval_batch_size,
                        memory_format=trained.memory_format(model))
    with torch.inference_mode(), trained.autocast():
        output, y = outputs_and_targets(model, test)  # (N, num_outputs), (N,) or (N, T)
        metrics = split_metrics(criterion, output, y, described.target_std)
    if described.task == "regression":
        return Evaluation(metrics, len(y))
    return Evaluation(metrics, len(y), described.class_names,
                      confusion_matrix(output, y, described.num_classes).tolist())


def output_folder(trained: Trained) -> Path:
    """evaluation/<checkpoint name>/ in the checkpoint's run directory, the folder holding trainer.checkpoint.dir:
    runs/NAME/evaluation/best/ for runs/NAME/checkpoints/best.pt. A checkpoint kept elsewhere gets it beside it,
    and so does one whose folder above is no run directory (it holds neither .hydra/ nor metrics.csv): the saved
    checkpoint.dir alone, which a stranger wrote, does not choose a folder further up."""
    folder, checkpoint_dir = trained.path.parent, Path(trained.config.trainer.checkpoint.dir)
    depth = len(checkpoint_dir.parts)
    in_run_dir = not checkpoint_dir.is_absolute() and folder.parts[-depth:] == checkpoint_dir.parts
    run_dir = Path(*folder.parts[:-depth]) if in_run_dir else folder
    if not ((run_dir / ".hydra").is_dir() or (run_dir / "metrics.csv").is_file()):
        run_dir = folder
    return run_dir / "evaluation" / trained.path.stem


def report(record: dict) -> str:
    """The metrics of evaluated()'s record as run.result_table shows them, then for classifiers the confusion
    matrix."""
    lines = [f"test metrics of {record['checkpoint']} (after epoch {record['epoch']}, {record['samples']} samples, "
             f"on {record['device']})", *metric_lines(record["test"])]
    if record["confusion_matrix"] is not None:
        lines += ["confusion matrix (rows: true class, columns: predicted class)",
                  *confusion_lines(record["class_names"], record["confusion_matrix"])]
    return "\n".join(lines)


def confusion_lines(names: list[str], counts: list[list[int]]) -> list[str]:
    """The matrix as text: a header row of the predicted classes, then a row per true class."""
    rows = [("", *names), *((name, *map(str, row)) for name, row in zip(names, counts))]
    return aligned(rows, right=range(1, len(names) + 1), indent="  ")


def draw_confusion(names: list[str], counts: list[list[int]], path: Path, title: str) -> None:
    """confusion.png: the counts as a heat map, true class down, predicted class across."""
    from matplotlib.figure import Figure  # half a second to import: only once there is something to draw

    matrix = np.asarray(counts)  # (K, K)
    size = min(4 + 0.4 * len(names), 14)  # inches: room for the class names, within a screen
    figure = Figure(figsize=(size + 1, size), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8, label="test samples")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    if len(names) <= MAX_CLASSES_ANNOTATED:
        for (row, column), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2  # white text on the darker half of the colour map
            axes.text(column, row, str(count), ha="center", va="center", color="white" if dark else "black")
    figure.savefig(path, format="png")


def evaluated(cfg: DictConfig) -> dict:
    """What `evaluate` (or trainer.evaluate) does once configs/evaluate.yaml is composed: evaluate, and write
    evaluation.json (the record returned: checkpoint, epoch, device and the Evaluation's fields) and for
    classifiers confusion.png; the record's "written" names the files."""
    trained = load(cfg)
    evaluation = evaluate(trained)
    folder = Path(cfg.output_dir) if cfg.output_dir is not None else output_folder(trained)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(trained.path), "epoch": trained.epoch, "device": str(trained.device),
              **asdict(evaluation)}
    (folder / "evaluation.json").write_text(json.dumps(record, indent=2) + "\n")
    written = [folder / "evaluation.json"]
    if evaluation.confusion_matrix is not None:
        draw_confusion(evaluation.class_names, evaluation.confusion_matrix, folder / CONFUSION_PNG,
                       title=f"{trained.path}: test accuracy {evaluation.test['accuracy']:.4f}")
        written.append(folder / CONFUSION_PNG)
    return {**record, "written": [str(path) for path in written]}


def main(cfg: DictConfig) -> None:
    """`evaluate`: evaluated()'s record printed."""
    record = evaluated(cfg)
    print(report(record))
    written = [Path(path) for path in record["written"]]
    print(f"written to {written[0].parent}: {', '.join(path.name for path in written)}")
