"""The `trainer` config group's typed schema: the dataclass `TrainerConfig` (its nested sections: sections).

Hydra merges the YAML onto it, so a wrong type fails at compose time and the defaults live here, once; each
`__post_init__` refuses a value that cannot work with a ConfigError naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore

from trainer.config.errors import ConfigError, one_of
from trainer.config.sections import CheckpointConfig, EarlyStoppingConfig, HealthConfig, LrFindConfig

PRECISIONS = ("32", "bf16", "16", "auto")
DEVICES = ("auto", "cpu", "cuda", "mps")
MATMUL_PRECISIONS = ("highest", "high", "medium")
LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    """Upper bound on epochs; early stopping may end the run sooner."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cpu, cuda or mps."""
    precision: str = "32"
    """32 (float32), bf16 or 16: autocast of the forward pass to that float type; auto: bf16 on a CUDA GPU that has
    it, 32 anywhere else (a recipe's bf16 that still runs on a CPU)."""
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
    init_weights: dict[str, Any] = field(default_factory=dict)
    """The model's starting weights as plain values, {parameter name: nested lists of numbers} for every parameter
    (state_dict names: `train trainer.inspect=true` shows them), e.g. a textbook example's in a recipe
    (experiment=textbook_one_step); {}: the model's own initialisation."""
    requeue: bool = False
    """In a Slurm job, on SIGUSR1 or SIGUSR2 (`sbatch --signal`, before the time limit): save last.pt, then
    `scontrol requeue` the job, which carries on with resume=auto in the same run directory."""
    inspect: bool = False
    """Instead of training: one optimisation step on one training batch, printing every parameter tensor before
    the step, its gradient and after it, and the model's output and loss before and after; saved as inspect.json."""
    fast_dev_run: Union[bool, int] = False
    """A quick check of a config before a long run: true (1) or N trains one epoch of N batches, validates on N
    and tests on N, then deletes everything the run wrote but its log and .hydra/ (checkpoints, metrics.csv,
    health.csv, curves.png, a logger's files, summary.json are written, in a scratch folder of the run directory,
    so that their code runs too; logger=mlflow opens its store but logs no run); false (or 0): off."""
    overfit_batches: int = 0
    """N >= 1: train every epoch on the same first N batches of the train split (in order, unaugmented) and
    validate on those same batches: a model that cannot drive their loss towards zero has a bug. The test split is
    scored as usual. 0: off."""
    limit_train_batches: Union[int, float] = 1.0
    """Training batches per epoch: an integer N >= 1 (the first N of each epoch's order), or a fraction in (0, 1]
    of them (rounded down, at least 1); 1.0 is all of them, 1 is one batch. The learning-rate schedule's length
    follows."""
    limit_val_batches: Union[int, float] = 1.0
    """Validation batches per epoch (of trainer.eval_batch_size samples): a count N >= 1 or a fraction in (0, 1]."""
    limit_test_batches: Union[int, float] = 1.0
    """Test batches (of trainer.eval_batch_size samples): a count N >= 1 or a fraction in (0, 1]."""
    curves: bool = True
    """Draw curves.png (train and val loss, the val metric and the learning rate against epoch) when the run ends,
    and for a classifier of two features decision_boundary.png (the predicted class over the plane, and the points)."""
    find_lr: bool = False
    """Instead of training: the learning-rate range test (lr_find sets it), which raises the learning rate step by
    step until the loss diverges, writes lr_find.csv and lr_find.png, and prints the learning rate it suggests; the
    weights and the optimiser are put back afterwards, and nothing is saved."""
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)
    """find_lr's sweep: from which learning rate to which, in how many steps, and when the loss has diverged."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """Gradient health: how often to check each layer's gradients, and the bounds that warn."""
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    """When to stop and which epoch counts as best."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Where and when weights are saved."""

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ConfigError("max_epochs", self.max_epochs, "an integer >= 1")
        one_of("device", self.device, DEVICES)
        one_of("precision", self.precision, PRECISIONS)
        one_of("on_nonfinite", self.on_nonfinite, ("stop", "skip"))
        one_of("grad_clip_algorithm", self.grad_clip_algorithm, ("norm", "value"))
        one_of("compile_mode", self.compile_mode, COMPILE_MODES)
        one_of("matmul_precision", self.matmul_precision, MATMUL_PRECISIONS)
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
        if self.init_weights and (self.resume is not None or self.init_from is not None):
            raise ConfigError("init_weights", "{...}", "{} when resume or init_from is set (they give the weights)")
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
        if self.find_lr and self.inspect:
            raise ConfigError("find_lr", self.find_lr, "false when inspect is true (each is a run of its own)")
        if self.find_lr and self.resume is not None:
            raise ConfigError("find_lr", self.find_lr, "false when resume is set (a resumed run carries on training; "
                              "the sweep starts from fresh or init_from weights)")
        self._check_debug_modes()

    def _check_debug_modes(self) -> None:
        """fast_dev_run, overfit_batches and limit_*_batches: each alone, as each sets how many batches run."""
        limits = {name: getattr(self, name) for name in LIMITS}
        for name, limit in limits.items():
            if not (type(limit) is int and limit >= 1 or type(limit) is float and 0 < limit <= 1):
                raise ConfigError(name, limit, "an integer >= 1 (batches) or a fraction in (0, 1] (1.0: all)")
        if self.fast_dev_run < 0:
            raise ConfigError("fast_dev_run", self.fast_dev_run, "false, true or an integer >= 1 (batches)")
        if self.overfit_batches < 0:
            raise ConfigError("overfit_batches", self.overfit_batches, "0 (off) or an integer >= 1 (batches)")
        limited = [f"{name}={limit}" for name, limit in limits.items() if limit != 1.0 or type(limit) is int]
        if self.overfit_batches and limited:
            raise ConfigError("overfit_batches", self.overfit_batches,
                              f"0 when {limited[0]} is set (overfit_batches sets the train and val batches)")
        if not self.fast_dev_run:
            return
        others = {"resume": (self.resume, "a dev run saves nothing to continue"),
                  "inspect": (self.inspect, "inspect is a one-step check of its own"),
                  "overfit_batches": (self.overfit_batches, "a dev run sets the batches")}
        for name, (value, why) in others.items():
            if value:
                raise ConfigError("fast_dev_run", self.fast_dev_run, f"false when {name}={value} ({why})")
        if limited:
            raise ConfigError("fast_dev_run", self.fast_dev_run,
                              f"false when {limited[0]} is set (a dev run sets the batches)")

    @property
    def batch_limits(self) -> tuple[int | float, int | float, int | float]:
        """The train, val and test batches per epoch, each a count or a fraction: fast_dev_run's N for every split,
        or limit_*_batches. (overfit_batches limits its batchers itself: data.batchers.)"""
        if self.fast_dev_run:
            return (int(self.fast_dev_run),) * 3
        return self.limit_train_batches, self.limit_val_batches, self.limit_test_batches


# The `trainer` group's one option is the dataclass itself: Hydra type-checks overrides against it while composing,
# and its defaults are the only ones (`train --cfg job` prints them).
ConfigStore.instance().store(group="trainer", name="default", node=TrainerConfig)
