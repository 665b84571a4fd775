"""The training loop makes the host wait for the device only where it means to: at log steps, health checks and
the epoch's end. Every other step is queued on a GPU without a round trip, so that the GPU never idles while
Python catches up.

A GPU shows a sync with torch.cuda.set_sync_debug_mode (scripts/gpu_check.sh counts them there). On the CPU the
same calls are caught by name: a TorchFunctionMode sees every `.item()`, `.tolist()`, `bool(t)`, `float(t)`...
that trainer's own code makes, and every copy to another device without non_blocking, so that a regression shows
on any machine. torch's internals are left to the GPU check: an optimiser reading its host-side step counter
costs nothing there.
"""

import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import trainer
from conftest import compose_config, options
from trainer.data import LoaderBatcher
from trainer.observe.health import GradientHealth
from trainer.observe.loggers import TensorBoardLogger
from trainer.run import Run, build

READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__format__", "__repr__", "__str__",
         "__array__", "numpy", "cpu", "nonzero", "masked_select", "unique", "equal", "allclose", "is_nonzero"}
"""Tensor calls that hand a value to Python (or whose result's size depends on the values), and so wait for the
device to finish everything queued before."""
GRAD_SCALER = str(Path(torch.__file__).parent / "amp" / "grad_scaler.py")
"""torch's GradScaler reads its found-inf flag before an optimiser step that has no fused kernel to take it."""
NOT_FUSED = ("momentum", "rmsprop", "sgd", "adagrad")
"""The optimizer options without `fused: null` (adam and adamw have it)."""
COPIES = {"to", "cuda", "copy_"}
TRAINER = str(Path(trainer.__file__).parent)
TORCH_TENSOR_LAYERS = tuple(str(Path(torch.__file__).parent / name) for name in ("_tensor.py", "overrides.py"))
SMALL_MLP = "model.hidden_sizes=[32]"
LOG_EVERY = 7
"""Log steps apart from the epoch's last step (20 on digits at batch 64), so that each kind of step shows."""


class HostReads(TorchFunctionMode):
    """Trainer's reads of device values, by the training step in progress (from the call of train_step N to that
    of step N+1; None before the first), and its copies to another device that block."""

    def __init__(self):
        super().__init__()
        self.step = None
        self.reads: dict[int | None, list[str]] = defaultdict(list)
        self.blocking_copies: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS or name in COPIES or name == "__getitem__":
            caller = _caller_outside_torch_tensor()
            if caller.startswith(TRAINER) or (caller.startswith(GRAD_SCALER) and _called_by_trainer()):
                if name in READS or (name == "__getitem__" and _masks(args)):
                    self.reads[self.step].append(f"{name} at {caller}")
                elif name in COPIES and _copies_across_devices(name, args, kwargs) and \
                        not kwargs.get("non_blocking", False):
                    self.blocking_copies.append(f"{name} at {caller}")
        return func(*args, **kwargs)


def _caller_outside_torch_tensor() -> str:
    """file:line of the code that called the tensor method (Tensor's own Python methods, such as __format__,
    passed through)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in TORCH_TENSOR_LAYERS:
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""


def _called_by_trainer() -> bool:
    frame = sys._getframe(2)
    while frame is not None and not frame.f_code.co_filename.startswith(TRAINER):
        frame = frame.f_back
    return frame is not None


def _masks(args: tuple) -> bool:
    """x[mask]: a boolean index, whose result's size the host must read."""
    index = args[1] if len(args) > 1 else None
    indices = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def _copies_across_devices(name: str, args: tuple, kwargs: dict) -> bool:
    source = args[0]
    if name == "cuda":
        return True
    if name == "copy_":
        return args[1].device != source.device
    target = kwargs.get("device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
    return target is not None and torch.device(target) != source.device


def fit_counting_reads(run: Run) -> HostReads:
    counter = HostReads()
    train_step = run.engine.train_step

    def counted_step(*args, **kwargs):
        counter.step = run.engine.global_step + 1
        return train_step(*args, **kwargs)

    run.engine.train_step = counted_step
    with counter:
        run.engine.fit(run.train, run.val)
    return counter


def steps_that_may_read(run: Run) -> set[int]:
    """Log steps, health-check steps (the first, then every health.every_n_steps), TensorBoard's steps and the last
    step of each epoch (the epoch's loss, validation and checkpoints come after it)."""
    settings, steps = run.engine.settings, run.engine.global_step
    per_epoch = len(run.train) // settings.accumulate_grad_batches
    allowed = {step for step in range(1, steps + 1) if step % settings.log_every_n_steps == 0 or step % per_epoch == 0}
    for observer in run.engine.observers:
        if isinstance(observer, (GradientHealth, TensorBoardLogger)):
            allowed |= {step for step in range(1, steps + 1) if observer.due(step)}
    return allowed


def reads_between_log_steps(run_dir: Path, *overrides: str) -> dict[int, list[str]]:
    run = build(compose_config("trainer.device=cpu", "data=digits", "trainer.max_epochs=2",
                               f"trainer.log_every_n_steps={LOG_EVERY}", *overrides), run_dir)
    counter = fit_counting_reads(run)
    assert run.engine.global_step >= 2 * LOG_EVERY + 2
    allowed = steps_that_may_read(run)
    return {step: calls for step, calls in counter.reads.items() if step is not None and step not in allowed}


@pytest.mark.parametrize("precision", ["32", "bf16", "16"])
@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_no_step_between_log_steps_reads_a_value_back_from_the_device(run_dir, optimizer, precision):
    reads = reads_between_log_steps(run_dir, SMALL_MLP, f"optimizer={optimizer}", f"trainer.precision={precision}")
    if precision == "16" and optimizer in NOT_FUSED:
        # float16 with an optimiser that has no fused kernel: torch's GradScaler reads its found-inf flag at
        # every step (its one sync per step, the README says so); nothing else may read.
        assert len(reads) >= 20 and all(call.split(" at ")[1].startswith(GRAD_SCALER)
                                        for calls in reads.values() for call in calls)
    else:
        assert reads == {}


@pytest.mark.parametrize("model", options("model"))
def test_no_model_makes_a_step_read_back_between_log_steps(run_dir, model):
    shrunk = {"resnet": ["data=cifar10", "model.channels=[4,8]", "model.blocks_per_stage=1", "data.batch_size=16"],
              "transformer": ["model.d_model=16", "model.dim_feedforward=32", "model.num_layers=1"],
              "mlp": [SMALL_MLP], "dropout_net": [SMALL_MLP]}
    assert reads_between_log_steps(run_dir, f"model={model}", *shrunk.get(model, [])) == {}


@pytest.mark.parametrize("setting", [
    *(f"scheduler={option}" for option in options("scheduler")),
    "trainer.grad_clip=1.0", "trainer.grad_clip=0.1 trainer.grad_clip_algorithm=value",
    "trainer.accumulate_grad_batches=2", "trainer.l1=0.001 trainer.l2=0.001",
    "data.pipeline=dataloader data.num_workers=0", "trainer.checkpoint.every_n_steps=5",
])
def test_no_training_option_makes_a_step_read_back_between_log_steps(run_dir, setting):
    reads = reads_between_log_steps(run_dir, SMALL_MLP, *setting.split())
    if "every_n_steps=5" in setting:  # a mid-epoch save checks the weights first, then writes them: its steps read
        reads = {step: calls for step, calls in reads.items() if step % 5 != 0}
    assert reads == {}


def test_on_nonfinite_skip_reads_one_flag_at_every_step(run_dir):
    """The counter sees real reads: skip must decide before each optimiser step (its cost, documented)."""
    reads = reads_between_log_steps(run_dir, SMALL_MLP, "trainer.on_nonfinite=skip")
    assert reads and all(any("item" in call for call in calls) for calls in reads.values())
    assert len(reads) >= 20


def test_batches_from_host_memory_are_copied_to_the_device_without_blocking():
    """data.pipeline=dataloader: each batch crosses from (pinned) host memory to the device asynchronously. The meta
    device stands in for a GPU: a copy there is a copy to another device, as to cuda."""
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    batches = LoaderBatcher(x, y, batch_size=8, device=torch.device("meta"), num_workers=0)
    with HostReads() as counter:
        served = [batch for batch in batches]
    assert len(served) == 5 and all(bx.device.type == "meta" for bx, _ in served)
    assert counter.blocking_copies == []


@pytest.mark.parametrize("line, caught", [
    ("x.to(device)", True),
    ("x.to(device, non_blocking=True)", False),
    ("x.to('cpu')", False),  # no other device: nothing crosses
])
def test_the_check_names_a_blocking_copy_that_trainer_code_makes(line, caught):
    """The check above can fail: a copy written in trainer's code (a line compiled as if in its package) without
    non_blocking is named, one with it is not."""
    in_trainer = compile(line, f"{TRAINER}/batcher_like.py", "eval")
    with HostReads() as counter:
        eval(in_trainer, {"x": torch.randn(2), "device": torch.device("meta")})
    assert counter.blocking_copies == ([f"to at {TRAINER}/batcher_like.py:1"] if caught else [])


@pytest.mark.parametrize("line", ["print(loss)", "str(loss)", "bool((loss > 0).all())", "torch.equal(loss, loss)",
                                  "loss[loss > 0]", "loss.masked_select(loss > 0)", "loss.unique()",
                                  "torch.allclose(loss, loss)", "numpy.asarray(loss)", "loss.to('cpu').tolist()"])
def test_the_check_names_each_way_trainer_code_could_read_a_value(line, capsys):
    """Each of these in trainer's code (a line compiled as if in its package) is a read the check names."""
    import numpy

    in_trainer = compile(line, f"{TRAINER}/engine_like.py", "eval")
    with HostReads() as counter:
        counter.step = 1
        eval(in_trainer, {"loss": torch.ones(3), "torch": torch, "numpy": numpy})
    assert counter.reads[1], line
