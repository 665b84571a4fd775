"""One run, top to bottom: build everything from the config, fit, test the best weights, write the summary."""

from __future__ import annotations

import functools
import json
import logging
import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainer import distributed, inspection
from trainer.backends import memory_format_for, use_backend_settings
from trainer.config import check_task_fit, validate
from trainer.curves import draw_run_curves, run_title
from trainer.data import Batcher, DataDescription, DataSplits, LoaderBatcher, build_data
from trainer.device import resolve_device
from trainer.distributed import Processes
from trainer.early_stopping import StopReason
from trainer.engine import Engine
from trainer.interrupts import REQUEUE_SIGNALS, Interrupted, requeue_slurm_job, slurm_job_preempted
from trainer.loggers import build_logger
from trainer.losses import num_outputs
from trainer.model_summary import summary_table
from trainer.records import writing
from trainer.resume import start_from_checkpoints
from trainer.report import UnreadableFile, read_summary
from trainer.run_directory import saved_config
from trainer.schedules import build_scheduler
from trainer.seeding import seed_everything
from trainer.text_table import aligned
from trainer.threads import use_fitting_threads

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a run is made of, built from the config and ready to fit."""

    engine: Engine
    data: DataSplits
    train: Batcher
    """Shuffled, augmented training batches."""
    val: Batcher
    test: Batcher


def build(cfg: DictConfig, run_dir: Path) -> Run:
    """Data first, since the model's input and output sizes come from it."""
    settings = validate(cfg)
    processes = distributed.from_environment()
    distributed.start(processes)
    device = resolve_device(settings.device)
    if processes.distributed and device.type == "cuda":  # one GPU per process: torchrun's LOCAL_RANK
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    use_fitting_threads(settings.num_threads, device)
    seed_everything(cfg.seed, settings.deterministic)
    use_backend_settings(device, settings.matmul_precision, settings.cudnn_benchmark, settings.deterministic)

    data = build_data(cfg.data)
    if cfg.data.task == "auto":
        log.info("data.task=auto: the target %r makes this a %s set", cfg.data.get("target"), data.task)
        cfg.data.task = data.task  # from here on the config says what was inferred (loss=auto reads it)
        check_task_fit(cfg, settings)
    criterion, model = build_model(cfg, data)
    memory_format = memory_format_for(model, device, settings.channels_last)
    model = model.to(device, memory_format=memory_format)
    optimizer = _optimizer(cfg.optimizer, model, device)
    train_batches, val_batches, test_batches = batchers(cfg.data, data, model, device, cfg.seed,
                                                        settings.eval_batch_size, processes, memory_format)
    steps_per_epoch = -(-len(train_batches) // settings.accumulate_grad_batches)
    scheduler, interval = build_scheduler(cfg.scheduler, optimizer, total_steps=steps_per_epoch * settings.max_epochs,
                                          mode=settings.early_stopping.direction)
    engine = Engine(model, criterion, optimizer, settings, device, run_dir, scheduler=scheduler,
                    scheduler_interval=interval, target_std=data.target_std,
                    config=OmegaConf.to_container(cfg, resolve=True), processes=processes,
                    logger=build_logger(cfg.get("logger"), run_dir) if processes.is_main else None,
                    data_description=data.description().to_plain(), choices=group_choices())
    start_from_checkpoints(settings, engine, train_batches, run_dir)
    log.info("%s: %d samples to train, %d to validate, %d to test; %s with %s parameters on %s%s",
             data.task, len(data.train[0]), len(data.val[0]), len(data.test[0]), type(model).__name__,
             f"{sum(p.numel() for p in model.parameters()):,}", device,
             f" x {processes.world_size} processes" if processes.distributed else "")
    if processes.is_main:  # (the other processes log warnings only: the summary's forward pass would be wasted)
        log.info("%s", summary_table(model, _sample_batch(data, device)))
    return Run(engine, data, train_batches, val_batches, test_batches)


def group_choices() -> Optional[dict[str, Optional[str]]]:
    """The option of each config group that `train` composed the run from ({"model": "mlp", "data": "digits", ...},
    Hydra's own groups left out); None outside a Hydra command (a config composed by a script)."""
    if not HydraConfig.initialized():
        return None
    return {group: option for group, option in HydraConfig.get().runtime.choices.items()
            if not group.startswith("hydra")}


def _sample_batch(data: DataSplits, device: torch.device) -> torch.Tensor:
    """Two validation samples as the model sees them: (2, *input_shape) floats, normalised like every batch."""
    x = data.val[0][:2].to(device)
    return data.normalize.to(device)(x) if data.normalize is not None else x


def build_model(cfg: DictConfig, data: DataSplits | DataDescription) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The loss, and the model sized by the data: its input shape, and as many outputs as the loss needs."""
    criterion = instantiate(cfg.loss)
    return criterion, instantiate(cfg.model, input_shape=data.input_shape, num_outputs=num_outputs(criterion, data))


def _optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over the model's parameters. `fused: null` picks torch's fused kernel (one op for all
    parameters instead of several per parameter tensor) on the devices that have it: a quarter less time per
    step for a small model on a CPU."""
    options = {}
    if optimizer_cfg.get("fused", False) is None:
        options["fused"] = device.type in ("cpu", "cuda")
    return instantiate(optimizer_cfg, **options)(model.parameters())


def batchers(data_cfg: DictConfig, data: DataSplits, model: torch.nn.Module, device: torch.device, seed: int,
             eval_batch_size: int, processes: Processes = Processes(),
             memory_format: torch.memory_format = torch.contiguous_format) -> tuple[Batcher, Batcher, Batcher]:
    """Train, val and test batches: from tensors moved to the device once (data.pipeline=device), or gathered
    in host memory by DataLoader workers and copied per batch (data.pipeline=dataloader). Each process of a
    distributed run serves its share of every batch, in the model's memory format."""
    share = {"rank": processes.rank, "world_size": processes.world_size, "memory_format": memory_format}
    if data_cfg.pipeline == "dataloader":
        make = functools.partial(LoaderBatcher, device=device, num_workers=data_cfg.num_workers,
                                 pin_memory=data_cfg.pin_memory, **share)
    else:
        def make(x: torch.Tensor, y: torch.Tensor, batch_size: int, **options) -> Batcher:
            return Batcher(x.to(device), y.to(device), batch_size, **share, **options)
    batch_size = data_cfg.batch_size
    drop_last = data_cfg.drop_last or _lone_last_sample_breaks_batchnorm(model, len(data.train[0]), batch_size)
    return (make(*data.train, batch_size, drop_last=drop_last, seed=seed, normalize=data.normalize,
                 augment=data.augment),
            make(*data.val, eval_batch_size, shuffle=False, normalize=data.normalize),
            make(*data.test, eval_batch_size, shuffle=False, normalize=data.normalize))


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train, test and summarise one run in `run_dir` (or inspect one step); return the best value of the
    monitored metric (or the loss after the inspected step)."""
    return execute(build(cfg, run_dir), run_dir)


def execute(run: Run, run_dir: Path) -> float:
    """What the config asks of a built run: fit and test it, or with trainer.inspect show one step."""
    return inspect(run, run_dir) if run.engine.settings.inspect else fit_and_test(run, run_dir)


def inspect(run: Run, run_dir: Path) -> float:
    """One optimisation step on the first training batch, shown and saved as inspect.json; nothing else is
    trained or saved. Returns the loss on that batch after the step."""
    report = inspection.inspect_one_step(run.engine, run.train)
    if run.engine.processes.is_main:
        inspection.save(report, run_dir / "inspect.json")
        log.info("%s\n(every value: %s)", inspection.printout(report), run_dir / "inspect.json")
    return report["loss_after"]


def fit_and_test(run: Run, run_dir: Path) -> float:
    """Fit, test the best weights, write summary.json; return the best value of the monitored metric. Raises
    Interrupted, once last.pt and the summary are written, when a signal stopped the run."""
    result = run.engine.fit(run.train, run.val)
    interrupted = result.stop_reason is StopReason.INTERRUPTED
    test = {} if interrupted else run.engine.test(run.test)  # a stopping job's grace period is for saving

    summary = {
        "test": test,
        "monitor": run.engine.early_stopping.monitor,
        "mode": run.engine.early_stopping.mode,
        "best_value": result.best_value,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason.value,
        "epochs": result.epochs,
        "steps": run.engine.global_step,
        "train_samples": run.train.num_samples,
        "train_seconds": round(result.train_seconds, 3),  # over every start of a resumed run
        "starts": result.starts,
        "device": str(run.engine.device),
        "processes": run.engine.processes.world_size,
        "num_parameters": sum(p.numel() for p in run.engine.model.parameters()),
    }
    if run.engine.processes.is_main:
        with writing(run_dir / "summary.json"):
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if run.engine.settings.curves and run.engine.metrics_log.rows:  # none when no epoch has ended
            draw_run_curves(run.engine.metrics_log.rows, run_dir / "curves.png", result.best_epoch,
                            title=run_title(run.engine.config))
    if interrupted:
        # As at the end of every run, the processes leave together, here before the host's handler (which may
        # exit at once) gets the signal: rank 0 has written the summary before any peer tears its connections down.
        distributed.wait_for_every_rank()
        stop_requests, requeue = run.engine.stop_requests, run.engine.settings.requeue
        received, is_main = stop_requests.received, run.engine.processes.is_main  # (one process asks Slurm)
        # scancel and a preemption both send SIGTERM: only a preempted job is to come back.
        preempted = (received is signal.SIGTERM and is_main and (requeue or stop_requests.host_requeues)
                     and slurm_job_preempted())
        # A host's own handler (submitit's: checkpoint, requeue, exit) gets the signals now, and the requeue is its.
        handed_on = stop_requests.hand_on_to_host(preempted)
        if requeue and not handed_on and is_main and (received in REQUEUE_SIGNALS or preempted):
            requeue_slurm_job()
        raise Interrupted(received)
    log.info(result_table(summary))
    return _value_for_sweepers(result.best_value, run.engine.early_stopping.mode)


def _value_for_sweepers(best_value: Optional[float], mode: str) -> float:
    """The best value of the monitored metric; with no finite epoch, the worst value there is, which a sweeper
    ranks last (it cannot rank nan, and Optuna refuses it)."""
    if best_value is None:
        return math.inf if mode == "min" else -math.inf
    return best_value


def finished_before(composed: DictConfig, run_dir: Path) -> Optional[float]:
    """With trainer.resume=auto, a run that already ended in `run_dir` with this very config (a sweep started
    again: its finished jobs) has nothing left to do: its summary's value for sweepers; None otherwise. A run
    that was interrupted, or whose config changed (more epochs, say), goes on to resume. So does one whose
    summary.json or .hydra/config.yaml is not what train writes (damaged, or written by someone else)."""
    if composed.trainer.resume != "auto":
        return None
    summary = _finished_run_summary(run_dir / "summary.json")
    if summary is None or saved_config(run_dir) != OmegaConf.to_container(composed):
        return None
    log.info("%s finished before with this config (stopped by %s after %d epochs, best %s %s): nothing to do. "
             "Remove its summary.json to train it again", run_dir, summary["stop_reason"], summary["epochs"],
             summary["monitor"], summary["best_value"])
    return _value_for_sweepers(summary["best_value"], summary.get("mode", "min"))


def _finished_run_summary(path: Path) -> Optional[dict]:
    """summary.json of a run that ended (not one interrupted), as train-report reads it (the keys and types
    fit_and_test writes); None for any other file."""
    try:
        summary = read_summary(path)
    except UnreadableFile:
        return None
    if summary is None or summary.get("mode", "min") not in ("min", "max"):
        return None
    return None if summary["stop_reason"] == StopReason.INTERRUPTED.value else summary


def _lone_last_sample_breaks_batchnorm(model: torch.nn.Module, num_samples: int, batch_size: int) -> bool:
    """BatchNorm cannot normalise a batch of one sample; drop such a last batch rather than fail the run."""
    batchnorms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
    has_batchnorm = any(isinstance(m, batchnorms) for m in model.modules())
    if has_batchnorm and num_samples % batch_size == 1:
        log.info("dropping the last batch of each epoch: it holds 1 sample, and BatchNorm needs at least 2")
        return True
    return False


def result_table(summary: dict) -> str:
    """The test metrics as a small table, with how the run ended."""
    if not summary["test"]:
        return f"no epoch ended with a finite loss (stopped by {summary['stop_reason']}): nothing to test"
    return "\n".join([f"test metrics (best epoch {summary['best_epoch']} of {summary['epochs']}, "
                      f"stopped by {summary['stop_reason']}, {summary['train_seconds']:.1f}s on {summary['device']})",
                      *metric_lines(summary["test"])])


def metric_lines(metrics: dict[str, float]) -> list[str]:
    """One indented line per metric, the names aligned: `  loss      0.1234`."""
    return aligned([(name, f"{value:.4f}") for name, value in metrics.items()], indent="  ")
