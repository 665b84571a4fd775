"""hydra/launcher=slurm: hydra-submitit-launcher's Slurm launcher, waiting for its jobs as trainer.slurm_queue
does (each job's state when it changes; a job that can never start, or Ctrl-C, cancels the sweep's jobs) and
saying in one line when sbatch refuses them.

Hydra finds launchers only in the hydra_plugins package, and imports every module there at each start: without
the `slurm` extra this module defines nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # the `slurm` extra is not installed
    SubmititSlurmLauncher = None

log = logging.getLogger(__name__)

if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        """Submits one job per combination, as the plugin does, then waits with trainer.slurm_queue."""

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import submitit  # (only when a sweep is launched: Hydra imports this module at every start)

            from trainer.cluster.slurm_queue import SweepJobsNotRun, wait_for_jobs

            assert self.config is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                             slurm_max_num_timeout=self.params["max_num_timeout"])
            # submitit names the keys shared by its executors plainly, and Slurm's own with a slurm_ prefix.
            shared = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{key if key in shared else f"slurm_{key}": value
                                          for key, value in self.params.items()
                                          if key not in ("submitit_folder", "max_num_timeout")})
            log.info("Submitting %d Slurm job(s); sweep directory %s", len(job_overrides), sweep_dir)
            calls: list[tuple[Any, ...]] = []
            for number, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
                calls.append((list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}",
                              Singleton.get_state()))
            try:
                jobs = executor.map_array(self, *zip(*calls))
            except submitit.core.utils.FailedJobError as refused:  # sbatch's error, e.g. a GPU where there is none
                said = [line.removeprefix("sbatch: error: ") for line in str(refused).splitlines() if line.strip()]
                raise SweepJobsNotRun(f"sbatch refused the sweep's jobs: {'; '.join(said) or 'no reason given'} "
                                      "(the request is set by hydra.launcher: partition, gpus_per_node, "
                                      "cpus_per_task, mem_gb, ...)") from None
            wait_for_jobs(jobs)
            return [job.results()[0] for job in jobs]
