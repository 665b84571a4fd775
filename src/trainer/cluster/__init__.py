"""Slurm: slurm_callback (the Hydra callback that makes a requeued job carry on), slurm_queue (a sweep's jobs
watched in the queue). The launcher itself is in hydra_plugins/trainer_slurm, where Hydra looks for launchers."""

__all__ = ["slurm_callback", "slurm_queue"]
