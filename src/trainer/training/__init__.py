"""Training: the engine's loop around the step, and everything a step and a run's state rest on.

engine (epochs, validation, early stopping, checkpoints, signals) around step (zero_grad, forward, loss,
backward, clip, step), with precision (autocast, loss scaling), nonfinite (stop or skip), observers (the hooks,
the progress bar), stop_agreement (signals across processes), outputs (a split's outputs), progress (the epoch
in progress, a fit's result); early_stopping, checkpoint (sealed files), resume (a run carried on), seeding,
schedules, losses, deferred_calls (the optimizer's and scheduler's partial configs); the machine: device,
backends, compilation, threads, distributed, interrupts."""

__all__ = ["backends", "checkpoint", "compilation", "deferred_calls", "device", "distributed", "early_stopping",
           "engine", "interrupts", "losses", "nonfinite", "observers", "outputs", "precision", "progress", "resume",
           "schedules", "seeding", "step", "stop_agreement", "threads"]
