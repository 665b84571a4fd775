"""Typed settings for the engine and the checks that run before any tensor exists.

The `trainer` config group is the dataclass `TrainerConfig`: Hydra merges the YAML onto it, so a wrong type
fails at compose time and the defaults live here, once. The other groups point `_target_` at torch's classes or
ours; `validate` checks their values against the `RULES` table, so that a bad value is one line naming the key,
the value and what is allowed, before torch is imported and before anything is written.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from trainer.vocabulary import LOSSES, METRICS, TASKS, better, measured_metrics

PRECISIONS = ("32", "bf16", "16")
DEVICES = ("auto", "cpu", "cuda", "mps")
MATMUL_PRECISIONS = ("highest", "high", "medium")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A setting that cannot work. The message names the key, the value given and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: got {value!r}, expected {allowed}")


def _one_of(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))


@dataclass
class EarlyStoppingConfig:
    monitor: str = "val_loss"
    """Validation metric that picks the best epoch (best.pt) and decides early stopping."""
    mode: Optional[str] = None
    """min or max: whether a smaller or a larger value is better; null takes it from the metric."""
    patience: Optional[int] = 10
    """Epochs without improvement before the run stops; null never stops early."""
    min_delta: float = 0.0
    """Smallest change of the metric that counts as an improvement."""

    def __post_init__(self) -> None:
        _one_of("early_stopping.monitor", self.monitor, METRICS)
        if self.mode is not None:
            _one_of("early_stopping.mode", self.mode, ("min", "max"))
        if self.patience is not None and self.patience < 1:
            raise ConfigError("early_stopping.patience", self.patience, "an integer >= 1, or null")
        if not self.min_delta >= 0:  # also refuses nan
            raise ConfigError("early_stopping.min_delta", self.min_delta, "a number >= 0")

    @property
    def direction(self) -> str:
        """`mode`, or when it is null the metric's own: max for accuracy and R^2, min for losses and errors."""
        # Derived here rather than written into `mode` by __post_init__: Hydra builds the schema's defaults by
        # calling this class, and a filled-in mode would become the default for every monitor.
        return self.mode if self.mode is not None else better(self.monitor)


@dataclass
class CheckpointConfig:
    dir: str = "checkpoints"
    """Folder for best.pt and last.pt, relative to the run directory."""
    save_last: bool = True
    """Write last.pt at the end of every epoch (best.pt is always written: the test uses it). The last.pt it
    replaces is kept as last.previous.pt, which resume falls back to should last.pt be unreadable."""
    every_n_steps: Optional[int] = None
    """Also write last.pt every this many optimiser steps within an epoch, so that a killed run loses at most
    that many steps; null writes it at epoch ends only."""

    def __post_init__(self) -> None:
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ConfigError("checkpoint.every_n_steps", self.every_n_steps, "an integer >= 1, or null")
        if self.every_n_steps is not None and not self.save_last:
            raise ConfigError("checkpoint.every_n_steps", self.every_n_steps,
                              "null when checkpoint.save_last is false (the steps' saves are last.pt)")


@dataclass
class HealthConfig:
    every_n_steps: Optional[int] = 100
    """Steps between gradient health checks (and the first step): per parameter tensor its gradient norm, weight
    norm and update-to-weight ratio, written to health.csv; null checks nothing."""
    vanishing_below: float = 1e-6
    """A gradient norm below this is vanishing: the layer barely learns. Warned once per tensor."""
    exploding_above: float = 1e3
    """A gradient norm above this, or not finite, is exploding. Warned once per tensor."""

    def __post_init__(self) -> None:
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ConfigError("health.every_n_steps", self.every_n_steps, "an integer >= 1, or null")
        if not self.vanishing_below >= 0:
            raise ConfigError("health.vanishing_below", self.vanishing_below, "a number >= 0")
        if not self.exploding_above > self.vanishing_below:
            raise ConfigError("health.exploding_above", self.exploding_above,
                              f"a number > health.vanishing_below={self.vanishing_below}")


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    """Upper bound on epochs; early stopping may end the run sooner."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda or mps."""
    precision: str = "32"
    """32 (float32), bf16 or 16: autocast of the forward pass to that float type."""
    grad_clip: Optional[float] = None
    """Clip the gradients to this value before each step (see grad_clip_algorithm); null does not clip."""
    grad_clip_algorithm: str = "norm"
    """norm: scale all gradients together so that their global norm is at most grad_clip (the direction stays);
    value: clamp every gradient element to [-grad_clip, grad_clip]."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients are added up before each optimiser step: a step of k batches of data.batch_size
    moves the weights as one batch of k * batch_size would, in the memory of one batch."""
    compile: bool = False
    """torch.compile the model: its first steps take longer (it compiles), later ones may be faster. Needs a C++
    compiler on a CPU and Triton on CUDA."""
    compile_mode: str = "default"
    """trainer.compile's mode: default; reduce-overhead (CUDA graphs: replays a step's kernels in one launch, for
    small models whose steps are launch-bound); max-autotune (times kernel choices: a longer compile, faster
    steps); max-autotune-no-cudagraphs."""
    matmul_precision: str = "highest"
    """float32 matrix products (torch.set_float32_matmul_precision): highest (full float32), high (TensorFloat-32
    on NVIDIA GPUs since Ampere: several times faster, 10 mantissa bits) or medium (bfloat16 where there is one)."""
    cudnn_benchmark: Optional[bool] = None
    """CUDA: cuDNN times its convolution algorithms for each new input shape at its first use and keeps the
    fastest (a run's shapes stay fixed, but for a smaller last batch). null: on, unless deterministic is true,
    which needs the same algorithms every run."""
    channels_last: Optional[bool] = None
    """Convolutional models: weights and image batches in channels-last memory (N, H, W, C), which tensor-core
    convolutions read without transposing. null: on for a model with 2-D convolutions on CUDA."""
    l1: float = 0.0
    """Weight of the L1 penalty sum(|w|) over weight matrices, added to the loss."""
    l2: float = 0.0
    """Weight of the L2 penalty sum(w^2) over weight matrices, added to the loss."""
    log_every_n_steps: int = 10
    """Steps between reads of the running loss for the progress bar (each read syncs with the device)."""
    num_threads: Optional[int] = None
    """Threads torch's ops may use on the CPU. null: OMP_NUM_THREADS where it is set, else the CPUs this process
    may use (its affinity mask, the Slurm job's CPUs per task, shared among torchrun's processes on the node), less
    those other processes keep busy when the model computes on the CPU: a thread per core waits for any core another
    process holds."""
    eval_batch_size: int = 1024
    """Batch size for validation and test, which need no gradients and so fit larger batches."""
    deterministic: bool = False
    """Use only deterministic kernels, so that a run repeats bit for bit on the same machine."""
    on_nonfinite: str = "stop"
    """A step whose loss or gradient is nan or inf: stop (end the run, naming the step; best.pt keeps the last
    good weights) or skip (leave the weights alone, count it, go on; reads one flag per step). At precision 16 the
    loss: gradients that overflow are the GradScaler's to skip, at a lower scale."""
    max_skipped: int = 10
    """on_nonfinite=skip: stop the run when more steps than this have been skipped."""
    resume: Optional[str] = None
    """auto: continue the run in this run directory from its checkpoints/last.pt (start fresh when there is
    none; give the run a stable directory, e.g. hydra.run.dir=runs/NAME); a path: continue from that file."""
    init_from: Optional[str] = None
    """A checkpoint whose model weights start this run (fine-tuning), or a file of torch.save(model.state_dict())
    (weights of your own, e.g. a textbook example's); nothing else is taken from it."""
    requeue: bool = False
    """In a Slurm job, on SIGUSR1 or SIGUSR2 (`sbatch --signal`, before the time limit): save last.pt, then
    `scontrol requeue` the job, which carries on with resume=auto in the same run directory."""
    inspect: bool = False
    """Instead of training: one optimisation step on one training batch, printing every parameter tensor before
    the step, its gradient and after it, and the model's output and loss before and after; saved as inspect.json."""
    curves: bool = True
    """Draw curves.png (train and val loss, the val metric and the learning rate against epoch) when the run ends."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """Gradient health: how often to check each layer's gradients, and the bounds that warn."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """When to stop and which epoch counts as best."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Where and when weights are saved."""

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError("max_epochs", self.max_epochs, "an integer >= 1")
        _one_of("device", self.device, DEVICES)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        _one_of("grad_clip_algorithm", self.grad_clip_algorithm, ("norm", "value"))
        _one_of("compile_mode", self.compile_mode, COMPILE_MODES)
        _one_of("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
        if self.compile_mode != "default" and not self.compile:
            raise ConfigError("compile_mode", self.compile_mode, "default unless compile is true (it is false)")
        if self.cudnn_benchmark and self.deterministic:
            raise ConfigError("cudnn_benchmark", self.cudnn_benchmark, "false or null when deterministic is true "
                              "(benchmarking may pick other algorithms in another run)")
        # os.path.isfile, not Path.is_file: that raises for a name too long for the OS.
        if self.resume not in (None, "auto") and not os.path.isfile(self.resume):
            raise ConfigError("resume", self.resume, "auto, or the path of a checkpoint file that exists")
        if self.init_from is not None and not os.path.isfile(self.init_from):
            raise ConfigError("init_from", self.init_from, "the path of a checkpoint file that exists")
        if self.resume == "auto" and not self.checkpoint.save_last:
            raise ConfigError("resume", self.resume, "null when checkpoint.save_last is false (auto resumes from "
                              "last.pt), or the path of a checkpoint file")
        if self.init_from is not None and self.resume is not None:
            raise ConfigError("init_from", self.init_from, "null when resume is set (a resumed run has its weights)")
        if self.max_skipped < 0:
            raise ConfigError("max_skipped", self.max_skipped, "an integer >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError("grad_clip", self.grad_clip, "a number > 0, or null")
        for name in ("l1", "l2"):
            if not getattr(self, name) >= 0:
                raise ConfigError(name, getattr(self, name), "a number >= 0")
        for name in ("log_every_n_steps", "eval_batch_size", "accumulate_grad_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "an integer >= 1")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError("num_threads", self.num_threads, "an integer >= 1, or null")


# The `trainer` group's one option is the dataclass itself: Hydra type-checks overrides against it while composing,
# and its defaults are the only ones (`train --cfg job` prints them).
ConfigStore.instance().store(group="trainer", name="default", node=TrainerConfig)


def config_dir() -> Path:
    """The YAML config groups: inside the installed package, or at the top of a source checkout (editable)."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Rule:
    """What one key of a component config accepts."""

    accepts: Callable[[Any], bool]
    allowed: str


def is_finite_number(v: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: an int too large for one (10**400) is not."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # math.isfinite converts an int to a float first
        return False


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE_INT = Rule(lambda v: _integer(v) and v > 0, "an integer >= 1")
NON_NEGATIVE_INT = Rule(lambda v: _integer(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: is_finite_number(v) and v > 0, "a number > 0")
NON_NEGATIVE = Rule(lambda v: is_finite_number(v) and v >= 0, "a number >= 0")
PROBABILITY = Rule(lambda v: is_finite_number(v) and 0 <= v < 1, "a number in [0, 1)")
OPEN_FRACTION = Rule(lambda v: is_finite_number(v) and 0 < v < 1, "a number in (0, 1)")
FACTOR = Rule(lambda v: is_finite_number(v) and 0 < v <= 1, "a number in (0, 1]")
BOOL = Rule(lambda v: isinstance(v, bool), "true or false")
INT_LIST = Rule(lambda v: isinstance(v, (list, tuple)) and all(_integer(n) and n > 0 for n in v),
                "a list of integers >= 1, e.g. [128,64]")
BETAS = Rule(lambda v: isinstance(v, (list, tuple)) and len(v) == 2
             and all(is_finite_number(b) and 0 <= b < 1 for b in v),
             "two numbers in [0, 1), e.g. [0.9,0.999]")


PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"
TENSORBOARD = "trainer.loggers.TensorBoardLogger"


def _choice(*options: str) -> Rule:
    return Rule(lambda v: v in options, "one of " + ", ".join(options))


def _or_null(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.accepts(v), f"{rule.allowed}, or null")


TEXT = Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
EXISTING_FILE = Rule(lambda v: isinstance(v, str) and os.path.isfile(v), "the path of a file that exists")
TEXT_LIST = Rule(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(n, str) for n in v),
                 "a list of column names, e.g. [age,height]")


# Keys of the component groups (data, model, loss, optimizer, scheduler) and what each accepts. A key a config
# does not have is not checked, and the model keys only for our models (trainer.models), so a user's own
# `_target_` takes its arguments as it likes.
RULES: dict[str, Rule] = {
    "seed": NON_NEGATIVE_INT,
    "data.task": _choice(*TASKS, "auto"),
    "data.batch_size": POSITIVE_INT,
    "data.val_fraction": OPEN_FRACTION,
    "data.test_fraction": _or_null(OPEN_FRACTION),
    "data.split_seed": NON_NEGATIVE_INT,
    "data.standardize": BOOL,
    "data.drop_last": BOOL,
    "data.seed": NON_NEGATIVE_INT,
    "data.n_samples": POSITIVE_INT,
    "data.noise": NON_NEGATIVE,
    "data.pipeline": _choice("device", "dataloader"),
    "data.num_workers": NON_NEGATIVE_INT,
    "data.pin_memory": BOOL,
    "data.root": TEXT,
    "data.download": BOOL,
    "data.path": EXISTING_FILE,
    "data.target": TEXT,
    "data.features": _or_null(TEXT_LIST),
    "data.augment.crop_padding": NON_NEGATIVE_INT,
    "data.augment.horizontal_flip": BOOL,
    "model.hidden_sizes": INT_LIST,
    "model.activation": _choice("relu", "tanh", "sigmoid", "gelu"),
    "model.norm": _choice("none", "batchnorm", "layernorm"),
    "model.residual": BOOL,
    "model.init": _choice("default", "he", "xavier"),
    "model.dropout": PROBABILITY,
    "model.d_model": POSITIVE_INT,
    "model.num_heads": POSITIVE_INT,
    "model.num_layers": POSITIVE_INT,
    "model.dim_feedforward": POSITIVE_INT,
    "model.norm_first": BOOL,
    "model.patch_size": _or_null(POSITIVE_INT),
    "model.channels": INT_LIST,
    "model.blocks_per_stage": POSITIVE_INT,
    "loss.label_smoothing": PROBABILITY,
    "loss.beta": POSITIVE,
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.momentum": PROBABILITY,
    "optimizer.nesterov": BOOL,
    "optimizer.alpha": PROBABILITY,
    "optimizer.eps": POSITIVE,
    "optimizer.betas": BETAS,
    "optimizer.lr_decay": NON_NEGATIVE,
    "optimizer.fused": _or_null(BOOL),
    "scheduler.step_size": POSITIVE_INT,
    "scheduler.gamma": FACTOR,
    "scheduler.warmup_steps": NON_NEGATIVE_INT,
    "scheduler.eta_min": NON_NEGATIVE,
    "scheduler.factor": OPEN_FRACTION,
    "scheduler.patience": NON_NEGATIVE_INT,
    "scheduler.interval": _choice("step", "epoch"),
    "logger.every_n_steps": POSITIVE_INT,
    "logger.histograms": BOOL,
}


def validate(cfg: DictConfig) -> TrainerConfig:
    """Check a composed config; return the engine's typed settings. Raises ConfigError naming the first bad key."""
    data, model = cfg.data, cfg.model
    our_model = str(model.get("_target_")).startswith("trainer.models.")
    for key, rule in RULES.items():
        if key.startswith("model.") and not our_model:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if not isinstance(node, DictConfig) or leaf not in node.keys():
            continue
        if OmegaConf.is_missing(node, leaf):
            raise ConfigError(key, "???", f"{rule.allowed} (a value is required)")
        value = node[leaf]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.accepts(value):
            raise ConfigError(key, value, rule.allowed)
    if data.test_fraction is not None and data.val_fraction + data.test_fraction >= 1:
        raise ConfigError("data.val_fraction", data.val_fraction,
                          f"a fraction that leaves samples to train: val_fraction + test_fraction < 1 "
                          f"(test_fraction={data.test_fraction})")
    if our_model and "num_heads" in model and "d_model" in model and model.d_model % model.num_heads:
        raise ConfigError("model.d_model", model.d_model,
                          f"a multiple of model.num_heads={model.num_heads} (each head gets d_model/num_heads)")
    if cfg.scheduler.get("_target_") == PLATEAU and cfg.scheduler.get("interval") != "epoch":
        raise ConfigError("scheduler.interval", cfg.scheduler.get("interval"),
                          "epoch (reduce-on-plateau compares the monitored metric, measured once per epoch)")
    tensorboard = cfg.get("logger") and cfg.logger.get("_target_") == TENSORBOARD
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger", "tensorboard", 'csv, or tensorboard once its extra is installed: '
                                                   'pip install "trainer[tensorboard]"')
    try:
        settings: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    except ConfigError as error:
        raise ConfigError(f"trainer.{error.key}", error.value, error.allowed) from None
    check_task_fit(cfg, settings)
    return settings


def check_task_fit(cfg: DictConfig, settings: TrainerConfig) -> None:
    """The loss and the monitored metric must suit the data's task (data.task). With data.task=auto this waits
    until the data is read and the task known (trainer.run checks again then)."""
    task = cfg.data.get("task")
    if task is None:
        raise ConfigError("data.task", task, f"one of {', '.join(TASKS)} (every data config says what it is for)")
    if task == "auto":
        return
    target = cfg.loss.get("_target_")
    if target in LOSSES and task not in LOSSES[target][1]:
        suitable = [name for name, tasks in LOSSES.values() if task in tasks]
        raise ConfigError("loss", LOSSES[target][0], f"one of {', '.join(suitable)} for a {task} set")
    measured = measured_metrics(task)
    if settings.early_stopping.monitor not in measured:
        raise ConfigError("trainer.early_stopping.monitor", settings.early_stopping.monitor,
                          f"one of {', '.join(measured)} (what a {task} set measures)")
