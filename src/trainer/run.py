"""One run, top to bottom: build everything from the config, fit, test the best weights, write the summary."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from trainer.config import ConfigError, TrainerConfig, check_task_fit, validate
from trainer.data import Batcher, DataDescription, DataSplits, batchers, build_data, limit_batches
from trainer.data.batcher import RowsOf
from trainer.observe import decision_boundary, inspection, lr_find
from trainer.observe.curves import draw_run_curves, run_title
from trainer.observe.health import GradientHealth, HealthReportSink
from trainer.observe.loggers import build_logger
from trainer.observe.metrics_log import MetricsLog
from trainer.observe.model_summary import summary_table
from trainer.observe.summary import result_table, summary_of, value_for_sweepers, write_summary
from trainer.training import distributed
from trainer.training.backends import memory_format_for, use_backend_settings
from trainer.training.compilation import compiled
from trainer.training.deferred_calls import deferred_call
from trainer.training.device import resolve_device
from trainer.training.distributed import Processes
from trainer.training.early_stopping import EarlyStopping
from trainer.training.engine import Engine
from trainer.training.interrupts import Interrupted, StopRequests, answer_stop_signal, ignore_stop_signals
from trainer.training.losses import num_outputs
from trainer.training.lr_finder import find_lr
from trainer.training.nonfinite import NonFinitePolicy
from trainer.training.observers import Observer, ProgressBar
from trainer.training.precision import Precision
from trainer.training.resume import start_from_checkpoints
from trainer.training.schedules import build_scheduler
from trainer.training.seeding import seed_everything
from trainer.training.step import TrainingStep
from trainer.training.stop_agreement import StopAgreement
from trainer.training.threads import use_fitting_threads
from trainer.vocabulary import StopReason

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything a run is made of, built from the config and ready to fit."""

    engine: Engine
    metrics_log: MetricsLog
    """metrics.csv's rows so far (also the engine's first observer)."""
    data: DataSplits
    train: Batcher
    """Shuffled, augmented training batches."""
    val: Batcher
    test: Batcher


def build(cfg: DictConfig, run_dir: Path) -> Run:
    """Data first, since the model's input and output sizes come from it."""
    settings = validate(cfg)
    if settings.fast_dev_run:  # one epoch of a few batches (TrainerConfig.fast_dev_run)
        # Its checkpoints in its scratch folder, which goes at the end, wherever trainer.checkpoint.dir points.
        settings = dataclasses.replace(settings, max_epochs=1,
                                       checkpoint=dataclasses.replace(settings.checkpoint, dir="checkpoints"))
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
        log.info("data.task=auto: the target %r makes this a %s set", cfg.data.get("target"), data.description.task)
        cfg.data.task = data.description.task  # from here on the config says what was inferred (loss=auto reads it)
        check_task_fit(cfg, settings)
    criterion, model = build_model(cfg, data.description)
    memory_format = memory_format_for(model, device, settings.channels_last)
    model = model.to(device, memory_format=memory_format)
    optimizer = _optimizer(cfg.optimizer, model, device)
    train_batches, val_batches, test_batches = batchers(
        cfg.data, data, model, device, cfg.seed, settings.eval_batch_size, processes.rank, processes.world_size,
        memory_format, worker_init_fn=ignore_stop_signals,  # the stop signals are the main process's to answer
        overfit_batches=settings.overfit_batches)
    for batches, limit in zip((train_batches, val_batches, test_batches), settings.batch_limits):
        limit_batches(batches, limit)
    if len(train_batches) == 0:  # (drop_last on too few samples) a run would train nothing; find_lr's sweep hang
        raise ConfigError("data.batch_size", cfg.data.batch_size,
                          f"at most the {len(data.train[0])} training samples when data.drop_last=true (no training "
                          f"batch is left: the run would train nothing)")
    steps_per_epoch = -(-len(train_batches) // settings.accumulate_grad_batches)
    scheduler = build_scheduler(cfg.scheduler, optimizer, total_steps=steps_per_epoch * settings.max_epochs,
                                mode=settings.early_stopping.direction)
    metrics_log = MetricsLog(run_dir / "metrics.csv" if processes.is_main else None)
    engine = _engine(settings, model, criterion, optimizer, scheduler, device, processes, run_dir,
                     observers=[metrics_log, *_observers(cfg, settings, model, run_dir, processes)],
                     target_std=data.description.target_std,
                     identity={"config": OmegaConf.to_container(cfg, resolve=True),
                               "data": data.description.to_plain(), "choices": group_choices()})
    start_from_checkpoints(settings, engine, train_batches, run_dir)
    log.info("%s: %d samples to train, %d to validate, %d to test; %s with %s parameters on %s%s",
             data.description.task, len(data.train[0]), len(data.val[0]), len(data.test[0]), type(model).__name__,
             f"{sum(p.numel() for p in model.parameters()):,}", device,
             f" x {processes.world_size} processes" if processes.distributed else "")
    if processes.is_main:  # (the other processes log warnings only: the summary's forward pass would be wasted)
        log.info("%s", summary_table(model, _sample_batch(data, device)))
    return Run(engine, metrics_log, data, train_batches, val_batches, test_batches)


def _engine(settings: TrainerConfig, model: torch.nn.Module, criterion: torch.nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: tuple[Optional[LRScheduler], Optional[str]],
            device: torch.device, processes: Processes, run_dir: Path, observers: list[Observer],
            **run_facts: Any) -> Engine:
    """The loop and its parts: the step (with its precision and non-finite policy), early stopping, the signals
    and the observers. run_facts: the Engine's target_std and identity."""
    # The model as the step calls it: compiled (trainer.compile), and with several processes wrapped in DDP,
    # whose backward averages the gradients across them. Evaluation needs no averaging: the compiled model.
    eval_model = compiled(model, device, settings.compile_mode) if settings.compile else model
    train_model = eval_model
    if processes.distributed:
        train_model = DistributedDataParallel(eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    precision = Precision(settings.precision, device)
    nonfinite = NonFinitePolicy(settings.on_nonfinite, settings.max_skipped, model, precision, device)
    step = TrainingStep(model, train_model, criterion, optimizer, settings, precision, nonfinite, processes,
                        *scheduler)
    stopping = settings.early_stopping
    return Engine(step, settings, device, run_dir / settings.checkpoint.dir,
                  EarlyStopping(stopping.monitor, stopping.direction, stopping.patience, stopping.min_delta),
                  observers, StopAgreement(StopRequests(), processes, device, settings.log_every_n_steps),
                  eval_model=eval_model, scheduler=scheduler[0], scheduler_interval=scheduler[1],
                  processes=processes, **run_facts)


def _observers(cfg: DictConfig, settings: TrainerConfig, model: torch.nn.Module, run_dir: Path,
               processes: Processes) -> list[Observer]:
    """Besides metrics.csv: gradient health, the logger and the progress bar, rank 0's (the other processes
    have the same weights and gradients)."""
    if not processes.is_main:
        return []
    logger = build_logger(cfg.get("logger"), run_dir)
    observers: list[Observer] = []
    if settings.health.every_n_steps is not None:
        observers.append(GradientHealth(model, settings.health, run_dir / "health.csv",
                                        report_to=logger if isinstance(logger, HealthReportSink) else None))
    return [*observers, *([logger] if logger is not None else []), ProgressBar(settings.log_every_n_steps)]


def group_choices() -> Optional[dict[str, Optional[str]]]:
    """The option of each config group that `train` composed the run from ({"model": "mlp", "data": "digits", ...},
    Hydra's own groups left out); None outside a Hydra command (a config composed by a script)."""
    if not HydraConfig.initialized():
        return None
    return {group: option for group, option in HydraConfig.get().runtime.choices.items()
            if not group.startswith("hydra")}


def _sample_batch(data: DataSplits, device: torch.device) -> torch.Tensor:
    """Two validation samples as the model sees them: (2, *input_shape) floats, normalised like every batch."""
    samples = data.val[0]
    x = (samples.read(np.arange(min(2, len(samples)))) if isinstance(samples, RowsOf) else samples[:2]).to(device)
    pixels = data.description.pixels
    return pixels.to(device)(x) if pixels is not None else x


def build_model(cfg: DictConfig, data: DataDescription) -> tuple[torch.nn.Module, torch.nn.Module]:
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
    return deferred_call(optimizer_cfg, "optimizer", **options)(model.parameters())


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train, test and summarise one run in `run_dir` (or inspect one step); return the best value of the
    monitored metric (or the loss after the inspected step)."""
    return execute(build(cfg, run_dir), run_dir)


def execute(run: Run, run_dir: Path) -> float:
    """What the config asks of a built run: fit and test it, with trainer.inspect show one step, or with
    trainer.find_lr sweep the learning rate. The batchers' DataLoader workers end with it: a sweep runs many jobs in
    one process, and each would otherwise keep its own."""
    settings = run.engine.settings
    try:
        if settings.inspect:
            return inspect(run, run_dir)
        return learning_rate_range_test(run, run_dir) if settings.find_lr else fit_and_test(run, run_dir)
    except Interrupted:  # its records are written: the observers ended the run with on_run_end
        raise
    except BaseException:
        for observer in run.engine.observers if run.engine.processes.is_main else []:
            observer.on_run_failed(run.engine)
        raise
    finally:
        for batches in (run.train, run.val, run.test):
            batches.close()


def inspect(run: Run, run_dir: Path) -> float:
    """One optimisation step on the first training batch, shown and saved as inspect.json; nothing else is
    trained or saved. Returns the loss on that batch after the step."""
    report = inspection.inspect_one_step(run.engine, run.train)
    if run.engine.processes.is_main:
        inspection.save(report, run_dir / "inspect.json")
        log.info("%s\n(every value: %s)", inspection.printout(report), run_dir / "inspect.json")
    return report["loss_after"]


def learning_rate_range_test(run: Run, run_dir: Path) -> float:
    """trainer.find_lr: the sweep (the weights and the optimiser put back afterwards), lr_find.csv, lr_find.png
    and the line with the suggested learning rate; nothing is saved. Returns the suggestion (nan: none)."""
    sweep = find_lr(run.engine, run.train)
    if run.engine.processes.is_main:
        lr_find.write_csv(sweep, run_dir / "lr_find.csv")
        lr_find.draw(sweep, run_dir / "lr_find.png", title=run_title(run.engine.config))
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
        log.info("%s", lr_find.suggestion_line(sweep, overrides))
    return sweep.suggestion if sweep.suggestion is not None else math.nan


def fit_and_test(run: Run, run_dir: Path) -> float:
    """Fit, test the best weights, write summary.json; return the best value of the monitored metric. Raises
    Interrupted, once last.pt and the summary are written, when a signal stopped the run."""
    result = run.engine.fit(run.train, run.val)
    interrupted = result.stop_reason is StopReason.INTERRUPTED
    test = {} if interrupted else run.engine.test(run.test)  # a stopping job's grace period is for saving

    summary = summary_of(run.engine, result, test, run.train.num_samples)
    if run.engine.processes.is_main:
        write_summary(summary, run_dir / "summary.json")
        if run.engine.settings.curves and run.metrics_log.rows:  # none when no epoch has ended
            draw_run_curves(run.metrics_log.rows, run_dir / "curves.png", result.best_epoch,
                            title=run_title(run.engine.config))
        if run.engine.settings.curves and test and decision_boundary.draws_a_plane(run.data.description):
            decision_boundary.draw(run.engine.model, run.data.description, run.data.train, run.data.test,
                                   run_dir / "decision_boundary.png", run.engine.device,
                                   title=run_title(run.engine.config))  # the best weights, which the test loaded
        for observer in run.engine.observers:
            observer.on_run_end(run.engine, summary)
    if interrupted:
        # As at the end of every run, the processes leave together, here before the host's handler (which may
        # exit at once) gets the signal: rank 0 has written the summary before any peer tears its connections down.
        distributed.wait_for_every_rank()
        raise Interrupted(answer_stop_signal(run.engine.stop.requests, run.engine.settings.requeue,
                                             run.engine.processes.is_main))
    log.info(result_table(summary))
    return value_for_sweepers(result.best_value, run.engine.early_stopping.mode)


