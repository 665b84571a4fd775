"""logger=mlflow: each run an MLflow run, in a local store by default, so that `mlflow ui` shows every run and every
sweep job.

mlflow takes seconds to import: it is imported here, when the logger is built, and never by `train --help`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import torch

from trainer.config.errors import ConfigError
from trainer.training.observers import Observer

if TYPE_CHECKING:
    from trainer.training.engine import Engine

log = logging.getLogger(__name__)

RUN_FILES = ("curves.png", "summary.json", "metrics.csv", "health.csv", "decision_boundary.png", ".hydra/config.yaml")
"""The run directory's files logged as artifacts at the end of a run, those of them that the run wrote. (A
trainer.find_lr run trains nothing and logs no MLflow run: its lr_find.csv and lr_find.png stay in its folder.)"""
NOT_METRICS = ("epoch", "step")
"""The columns of a metrics.csv row that say when, not how well: the epoch is the metrics' step."""
FINAL_STATUS = {"interrupted": "KILLED"}
"""The MLflow status of a run that ended for a reason (summary.json's stop_reason) other than FINISHED's."""


class MlflowLogger(Observer):
    """Params: the flattened config (optimizer.lr, ...), once. Metrics: every metrics.csv row with the epoch as the
    step, and every `every_n_steps` steps the step's loss and learning rate (step/train_loss, step/lr) with the
    optimiser step as the step; at the end the test metrics. Artifacts at the end: `RUN_FILES` and best.pt. The run
    is named after the run directory and tagged with its path and the option of each config group; a resumed run
    continues the MLflow run its checkpoint names."""

    def __init__(self, run_dir: Path, tracking_uri: str = "sqlite:///mlflow.db",
                 experiment_name: Optional[str] = None, every_n_steps: int = 50):
        self.run_dir, self.tracking_uri, self.every_n_steps = run_dir, tracking_uri, every_n_steps
        self.experiment_name = experiment_name
        """None: the data option's name (or "trainer" for a config composed outside `train`)."""
        self.run_id: Optional[str] = None
        self.broken = False
        """True once a call to the store failed during the run: training goes on, the logging stops."""
        self.client = _open_store(tracking_uri)

    def state_dict(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("mlflow_run_id")  # None: a checkpoint of a run logged elsewhere, or not at all

    def on_fit_start(self, engine: Engine) -> None:
        if engine.settings.fast_dev_run:  # its store is opened (checked), but a dev run keeps nothing, there too
            log.info("mlflow: trainer.fast_dev_run is not logged to %s", self.tracking_uri)
            return
        with self._calls_to_the_store():
            if self.run_id is not None and _holds_run(self.client, self.run_id, self.tracking_uri):
                self.client.update_run(self.run_id, status="RUNNING")
                log.info("mlflow: run %s continued in %s", self.run_id, self.tracking_uri)
            else:
                self.run_id = _new_run(self.client, engine, self.run_dir, self.experiment_name, self.tracking_uri)
            self._log_params(engine.config)

    def on_step_end(self, engine: Engine, loss: Optional[torch.Tensor]) -> None:
        # trainer.inspect's step comes before any fit, with no MLflow run yet: it is not logged.
        if loss is None or not self.logging or engine.global_step % self.every_n_steps:
            return
        self._log_metrics({"step/train_loss": loss.item(), "step/lr": engine.lr}, engine.global_step)

    def on_epoch_end(self, engine: Engine, row: dict[str, float]) -> None:
        if self.logging:
            metrics = {name: value for name, value in row.items() if name not in NOT_METRICS}
            self._log_metrics(metrics, int(row["epoch"]))

    def on_run_end(self, engine: Engine, summary: dict[str, Any]) -> None:
        if not self.logging:
            return
        self._log_metrics({f"test_{name}": value for name, value in summary["test"].items()}, summary["epochs"])
        with self._calls_to_the_store():
            for name in RUN_FILES:
                path = self.run_dir / name
                if path.is_file():
                    folder = str(Path(name).parent)
                    self.client.log_artifact(self.run_id, str(path), artifact_path=None if folder == "." else folder)
            best = engine.checkpoint_dir / "best.pt"
            if best.is_file():
                self.client.log_artifact(self.run_id, str(best), artifact_path=engine.checkpoint_dir.name)
            self.client.set_terminated(self.run_id, FINAL_STATUS.get(summary["stop_reason"], "FINISHED"))

    def on_run_failed(self, engine: Engine) -> None:
        if self.logging:
            with self._calls_to_the_store():
                self.client.set_terminated(self.run_id, "FAILED")

    @property
    def logging(self) -> bool:
        """Whether there is a run to log to: none before the fit (trainer.inspect's step), or once the store failed."""
        return self.run_id is not None and not self.broken

    def _log_params(self, config: dict[str, Any]) -> None:
        """The flattened config, in batches of the size MLflow takes, each value cut to the length it takes. A resumed
        run logs only the params it does not have: MLflow refuses to change a param's value."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        logged = self.client.get_run(self.run_id).data.params
        params = [Param(key, value[:MAX_PARAM_VAL_LENGTH]) for key, value in flattened(config).items()
                  if key not in logged]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + MAX_PARAMS_TAGS_PER_BATCH])

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        """A resumed run logs again the steps it logged after its checkpoint: MLflow keeps both points of such a
        step, and the later one is the run's latest value."""
        from mlflow.entities import Metric

        with self._calls_to_the_store():
            timestamp = _milliseconds()
            metrics = [Metric(mlflow_key(name), float(value), timestamp, step) for name, value in values.items()]
            self.client.log_batch(self.run_id, metrics=metrics)

    @contextlib.contextmanager
    def _calls_to_the_store(self) -> Iterator[None]:
        """A store that fails during the run (a server gone, a full disk) costs the logging, not the training: one
        warning naming logger.tracking_uri, and nothing more is sent to it."""
        try:
            yield
        except Exception as error:  # MLflow's own errors and those of its HTTP and SQL clients alike
            self.broken = True
            log.warning("logger.tracking_uri=%s: MLflow failed, nothing more is logged there this run: %s",
                        self.tracking_uri, _first_line(error))


def _new_run(client: Any, engine: Engine, run_dir: Path, experiment_name: Optional[str], tracking_uri: str) -> str:
    """A run named after the run directory, in the experiment `experiment_name` (None: the data option's name),
    tagged with the directory's path and the option of each config group; its id."""
    choices = engine.identity.get("choices") or {}
    name = experiment_name or choices.get("data") or "trainer"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    tags = {"run_dir": str(run_dir.resolve())}
    tags |= {f"choice.{group}": option for group, option in choices.items() if option is not None}
    run = client.create_run(experiment_id, run_name=run_dir.name, tags=tags)
    log.info("mlflow: run %s in experiment %r of %s", run.info.run_id, name, tracking_uri)
    return run.info.run_id


def _open_store(tracking_uri: str) -> Any:
    """An MlflowClient of the store, asked once for an experiment before training starts, so that a bad URI or a
    server that does not answer is a mistake in one line. The question is asked once, with no retries: by default
    MLflow retries a refused connection for minutes."""
    from mlflow.tracking import MlflowClient

    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        # MLflow 3 refuses a new folder store unless asked to allow it; naming one as logger.tracking_uri asks.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        client = MlflowClient(tracking_uri)
        with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            client.search_experiments(max_results=1)
    except Exception as error:  # each store has its own errors: MLflow's, sqlalchemy's, requests'
        raise ConfigError("logger.tracking_uri", tracking_uri,
                          f"a tracking store MLflow can open (sqlite:///FILE.db, a folder, http://HOST:PORT); "
                          f"MLflow said: {_first_line(error)}") from None
    return client


def _holds_run(client: Any, run_id: str, tracking_uri: str) -> bool:
    """Whether the store holds the run a checkpoint names; a run resumed into another store starts a new one."""
    try:
        client.get_run(run_id)
    except Exception:  # MLflow's "run not found" (its type and code differ between stores)
        log.warning("mlflow: run %s of the checkpoint is not in %s: a new run is started", run_id, tracking_uri)
        return False
    return True


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def flattened(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"optimizer": {"lr": 0.01}} -> {"optimizer.lr": "0.01"}: MLflow's params are flat strings. Lists stay one
    value ("[64, 64]"); a key is made one MLflow accepts."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = mlflow_key(f"{prefix}{key}")
        if isinstance(value, dict) and value:
            flat |= flattened(value, f"{name}.")
        else:
            flat[name] = str(value)
    return flat


def mlflow_key(name: str) -> str:
    """A name MLflow takes as a key: letters, digits and _-. /: only, at most its key length."""
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    return re.sub(r"[^\w\-. /:]", "_", name)[:MAX_ENTITY_KEY_LENGTH]


def _milliseconds() -> int:
    return int(time.time() * 1000)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
