"""Every command's entry point. `train`: Hydra composes the config, `validate` checks it, `trainer.run` trains.

A user's mistake (an unknown option, a wrong type, a value out of range, a device this machine lacks) ends the
command with exit code 2 and one line naming the key, the value and what is allowed: no traceback, and nothing
written, because the check runs before Hydra creates the run directory. Mistakes that show only once the run
starts (the data, a checkpoint to resume from) end the same way and leave the run directory as they found it.
torch is imported only once a run starts, so `train --help` and config errors come back quickly.

A run stopped by a signal (SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C) saves last.pt first and exits with 128 + the
signal's number.

`evaluate` and `predict` read a checkpoint train wrote (configs/evaluate.yaml, predict.yaml; the work is in
trainer.inference.evaluation and trainer.inference.prediction). Their mistakes (a checkpoint that is missing or
unreadable, an input the model cannot take) end the same way, in one line and exit code 2; they write nothing of
Hydra's. So does `train-export` (configs/export.yaml, trainer.inference.export), which writes a checkpoint's model
as a .safetensors file and a JSON file that `evaluate` and `predict` take in its place.

`train-report` (report) and `train-plot` (plot) read what runs wrote (trainer.observe), and import no torch.

From Python, `trainer.train`, `trainer.evaluate` and `trainer.predict` (python_api) run the same checks and jobs,
return what the commands print, and raise UsageError where they exit 2.
"""

from trainer.cli.before_run import ValidateBeforeRun
from trainer.cli.checkpoint_commands import evaluate, export, predict
from trainer.cli.train import train

__all__ = ["ValidateBeforeRun", "evaluate", "export", "predict", "train"]
