"""Slurm's commands stood in for, where a test needs no cluster."""

from __future__ import annotations

from pathlib import Path


def fake_scontrol(folder: Path, preempt_time: str = "None") -> Path:
    """An `scontrol` that writes down its arguments, in folder/scontrol.log, and to `show job` answers as Slurm
    does, with the job's PreemptTime: a date while a preemption's grace time runs, None otherwise (scancel)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {folder / "scontrol.log"}
if [ "$1" = show ]; then
    echo "JobId=$3 JobName=train"
    echo "   JobState=RUNNING Reason=None Dependency=(null)"
    echo "   PreemptEligibleTime=2026-11-30T01:00:00 PreemptTime={preempt_time}"
    echo "   SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-30T01:00:00"
fi
""")
    script.chmod(0o755)
    return folder / "scontrol.log"
