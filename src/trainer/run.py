"""One run, top to bottom: build everything from the config, fit, test the best weights, write the summary."""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trainer.config import check_task_fit, validate
from trainer.data import Batcher, DataSplits, LoaderBatcher, build_data
from trainer.device import resolve_device
from trainer.early_stopping import StopReason
from trainer.engine import Engine
from trainer.interrupts import REQUEUE_SIGNALS, Interrupted, requeue_slurm_job
from trainer.losses import num_outputs
from trainer.resume import start_from_checkpoints
from trainer.schedules import build_scheduler
from trainer.seeding import seed_everything

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
    device = resolve_device(settings.device)
    seed_everything(cfg.seed, settings.deterministic)

    data = build_data(cfg.data)
    if cfg.data.task == "auto":
        log.info("data.task=auto: the target %r makes this a %s set", cfg.data.get("target"), data.task)
        cfg.data.task = data.task  # from here on the config says what was inferred (loss=auto reads it)
        check_task_fit(cfg, settings)
    criterion = instantiate(cfg.loss)
    model = instantiate(cfg.model, input_shape=data.input_shape, num_outputs=num_outputs(criterion, data))
    model = model.to(device)
    optimizer = _optimizer(cfg.optimizer, model, device)
    train_batches, val_batches, test_batches = _batchers(cfg.data, data, model, device, cfg.seed,
                                                         settings.eval_batch_size)
    scheduler, interval = build_scheduler(cfg.scheduler, optimizer,
                                          total_steps=len(train_batches) * settings.max_epochs,
                                          mode=settings.early_stopping.direction)
    engine = Engine(model, criterion, optimizer, settings, device, run_dir, scheduler=scheduler,
                    scheduler_interval=interval, target_std=data.target_std,
                    config=OmegaConf.to_container(cfg, resolve=True))
    start_from_checkpoints(settings, engine, train_batches, run_dir)
    log.info("%s: %d samples to train, %d to validate, %d to test; %s with %s parameters on %s",
             data.task, len(data.train[0]), len(data.val[0]), len(data.test[0]), type(model).__name__,
             f"{sum(p.numel() for p in model.parameters()):,}", device)
    return Run(engine, data, train_batches, val_batches, test_batches)


def _optimizer(optimizer_cfg: DictConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer over the model's parameters. `fused: null` picks torch's fused kernel (one op for all
    parameters instead of several per parameter tensor) on the devices that have it: a quarter less time per
    step for a small model on a CPU."""
    options = {}
    if optimizer_cfg.get("fused", False) is None:
        options["fused"] = device.type in ("cpu", "cuda")
    return instantiate(optimizer_cfg, **options)(model.parameters())


def _batchers(data_cfg: DictConfig, data: DataSplits, model: torch.nn.Module, device: torch.device, seed: int,
              eval_batch_size: int) -> tuple[Batcher, Batcher, Batcher]:
    """Train, val and test batches: from tensors moved to the device once (data.pipeline=device), or gathered
    in host memory by DataLoader workers and copied per batch (data.pipeline=dataloader)."""
    if data_cfg.pipeline == "dataloader":
        make = functools.partial(LoaderBatcher, device=device, num_workers=data_cfg.num_workers,
                                 pin_memory=data_cfg.pin_memory)
    else:
        def make(x: torch.Tensor, y: torch.Tensor, batch_size: int, **options) -> Batcher:
            return Batcher(x.to(device), y.to(device), batch_size, **options)
    batch_size = data_cfg.batch_size
    drop_last = data_cfg.drop_last or _lone_last_sample_breaks_batchnorm(model, len(data.train[0]), batch_size)
    return (make(*data.train, batch_size, drop_last=drop_last, seed=seed, normalize=data.normalize,
                 augment=data.augment),
            make(*data.val, eval_batch_size, shuffle=False, normalize=data.normalize),
            make(*data.test, eval_batch_size, shuffle=False, normalize=data.normalize))


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train, test and summarise one run in `run_dir`; return the best value of the monitored metric."""
    return fit_and_test(build(cfg, run_dir), run_dir)


def fit_and_test(run: Run, run_dir: Path) -> float:
    """Fit, test the best weights, write summary.json; return the best value of the monitored metric. Raises
    Interrupted, once last.pt and the summary are written, when a signal stopped the run."""
    result = run.engine.fit(run.train, run.val)
    interrupted = result.stop_reason is StopReason.INTERRUPTED
    test = {} if interrupted else run.engine.test(run.test)  # a stopping job's grace period is for saving

    summary = {
        "test": test,
        "monitor": run.engine.early_stopping.monitor,
        "best_value": result.best_value,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason.value,
        "epochs": result.epochs,
        "steps": run.engine.global_step,
        "train_samples": run.train.num_samples,
        "train_seconds": round(result.train_seconds, 3),
        "device": str(run.engine.device),
        "num_parameters": sum(p.numel() for p in run.engine.model.parameters()),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if interrupted:
        received = run.engine.stop_requests.received
        if run.engine.settings.requeue and received in REQUEUE_SIGNALS:
            requeue_slurm_job()
        raise Interrupted(received)
    log.info(result_table(summary))
    return result.best_value if result.best_value is not None else math.nan


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
    width = max(len(name) for name in summary["test"])
    lines = [f"test metrics (best epoch {summary['best_epoch']} of {summary['epochs']}, "
             f"stopped by {summary['stop_reason']}, {summary['train_seconds']:.1f}s on {summary['device']})"]
    lines += [f"  {name:<{width}}  {value:.4f}" for name, value in summary["test"].items()]
    return "\n".join(lines)
