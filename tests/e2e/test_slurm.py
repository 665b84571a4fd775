"""Slurm without a cluster: hydra/launcher=slurm and scripts/slurm/train.sbatch run against stand-ins for sbatch,
srun, scontrol, scancel, sacct and train, which record what they are asked and run the job as Slurm would;
and submitit's local executor runs a sweep for real. (tests/unit/cluster/test_slurm_launcher.py checks the
launcher's config.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pausing_model import MODEL, TrainProcess, wait_until
from helpers.commands import assert_succeeded, train

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm" / "train.sbatch"
JOB_ID = "4242"

# Each stand-in is a bash script; $FAKE_SLURM is the folder where they keep the job's state and their records.
FAKE_TOOLS = {
    "sbatch": r"""
# Records the batch script and its arguments, then runs it as Slurm would: in the background, in a session of its
# own, with the job's variables. A job that asked to be requeued runs again, under the same id, once it ends.
cp "$1" "$FAKE_SLURM/job.sbatch"
printf '%s\n' "$@" > "$FAKE_SLURM/sbatch.args"
shift
setsid bash -c '
    export SLURM_JOB_ID=4242 SLURM_JOB_NAME=train SLURM_NNODES=1 SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=node1 \
        SLURM_NTASKS=1 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_GPUS_ON_NODE=2 SLURM_RESTART_COUNT=0
    while true; do
        bash "$FAKE_SLURM/job.sbatch" "$@" >> "$FAKE_SLURM/job.out" 2>&1 &
        echo $! > "$FAKE_SLURM/job.pid"
        wait $!
        status=$?
        [ -e "$FAKE_SLURM/requeued" ] || break
        rm "$FAKE_SLURM/requeued"
        SLURM_RESTART_COUNT=$((SLURM_RESTART_COUNT + 1))
    done
    echo $status > "$FAKE_SLURM/job.status"
' job "$@" < /dev/null > /dev/null 2>&1 &
echo "Submitted batch job 4242"
""",
    "srun": r"""
# One task on the one node: srun's options are dropped (--output and --error honoured, with %j and %t), the pid
# is noted as the step's, for scancel, and srun becomes the command.
expand() { echo "$1" | sed "s/%j/$SLURM_JOB_ID/g; s/%t/0/g"; }
while [[ $1 == -* ]]; do
    case $1 in
        --output) mkdir -p "$(dirname "$(expand "$2")")"; exec >> "$(expand "$2")"; shift ;;
        --error) mkdir -p "$(dirname "$(expand "$2")")"; exec 2>> "$(expand "$2")"; shift ;;
    esac
    shift
done
echo $$ >> "$FAKE_SLURM/step.pids"
exec "$@"
""",
    "scancel": r"""
# scancel --signal=SIG JOB: noted, and SIG goes to the job's steps, not to its batch script.
echo "scancel $*" >> "$FAKE_SLURM/events"
for pid in $(cat "$FAKE_SLURM/step.pids"); do kill -s "${1#--signal=}" "$pid" 2>/dev/null; done
""",
    "scontrol": r"""
# scontrol show hostnames: the one node. scontrol show job JOB: noted, and the job with its PreemptTime, a date
# from $FAKE_SLURM/preempt_time while a preemption's grace time runs, None otherwise. scontrol requeue JOB: noted;
# the job runs again once it ends.
case $1 in
    show)
        if [ "$2" = job ]; then
            echo "scontrol $*" >> "$FAKE_SLURM/events"
            echo "JobId=$3 JobName=train"
            echo "   PreemptEligibleTime=2026-11-30T01:00:00 PreemptTime=$(cat "$FAKE_SLURM/preempt_time" 2>/dev/null || echo None)"
        else
            echo node1
        fi ;;
    requeue) echo "scontrol $*" >> "$FAKE_SLURM/events"; touch "$FAKE_SLURM/requeued" ;;
esac
""",
    "sacct": r"""
# The job's state, in the format submitit reads.
state=RUNNING
[ -e "$FAKE_SLURM/job.status" ] && { [ "$(cat "$FAKE_SLURM/job.status")" = 0 ] && state=COMPLETED || state=FAILED; }
printf 'JobID|State|NodeList\n4242|%s|node1\n' "$state"
""",
    "train": r"""
# Notes its arguments. A first start runs until stopped: on SIGTERM it exits 143, as `train` does once saved (where
# trainer.checkpoint.dir says: the script goes by the exit status). A start after a requeue ends at once.
echo "train $* (start $SLURM_RESTART_COUNT)" >> "$FAKE_SLURM/events"
[ "$SLURM_RESTART_COUNT" = 0 ] || exit 0
trap 'echo "train: SIGTERM" >> "$FAKE_SLURM/events"; kill $training; exit 143' TERM
sleep 120 &
training=$!
echo "train: training" >> "$FAKE_SLURM/events"
wait $training
""",
}


@dataclass
class FakeSlurm:
    folder: Path
    """The job's state and the stand-ins' records."""
    env: dict[str, str]
    """PATH with the stand-ins first, and FAKE_SLURM."""

    def read(self, name: str) -> str:
        return (self.folder / name).read_text() if (self.folder / name).exists() else ""

    def events(self) -> list[str]:
        return self.read("events").splitlines()

    def pid(self, name: str) -> int:
        """The batch script's (job.pid) or the first step's (step.pids), once there."""
        wait_until(lambda: self.read(name).strip() != "", name)
        return int(self.read(name).split()[0])

    def exit_status(self) -> int:
        """The job's exit status, once it has ended for good."""
        wait_until(lambda: self.read("job.status").strip() != "", "the job to end")
        return int(self.read("job.status"))


@pytest.fixture
def fake_slurm(tmp_path):
    if shutil.which("setsid") is None:
        pytest.skip("the stand-in for sbatch starts each job in a session of its own with setsid (util-linux)")
    bin_dir, folder = tmp_path / "fake-bin", tmp_path / "fake-slurm"
    bin_dir.mkdir()
    folder.mkdir()
    for name, body in FAKE_TOOLS.items():
        (bin_dir / name).write_text("#!/bin/bash" + body)
        (bin_dir / name).chmod(0o755)
    cluster = FakeSlurm(folder, {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM": str(folder)})
    yield cluster
    if cluster.read("job.pid") and not cluster.read("job.status"):  # a failed test leaves no job behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(cluster.pid("job.pid")), signal.SIGKILL)


def submit(cluster: FakeSlurm, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sbatch", *args], cwd=cwd, env={**os.environ, **cluster.env}, capture_output=True,
                          text=True, timeout=30)


# --- scripts/slurm/train.sbatch ---------------------------------------------------------------------------------

TRAIN = f"train hydra.run.dir='runs/train-{JOB_ID}' trainer.resume=auto data=moons"
"""What the script's srun runs on the fake job's one node, with `data=moons` passed to sbatch."""


def last_line(cluster: FakeSlurm) -> str:
    return cluster.read("job.out").strip().splitlines()[-1]


def test_train_sbatch_on_sigusr1_stops_the_training_then_requeues_and_starts_again_in_the_same_directory(
        fake_slurm, tmp_path):
    submitted = submit(fake_slurm, str(SCRIPT), "data=moons", cwd=tmp_path)
    assert submitted.stdout == f"Submitted batch job {JOB_ID}\n", submitted.stderr
    assert fake_slurm.read("sbatch.args").splitlines() == [str(SCRIPT), "data=moons"]
    directives = [line.split()[1] for line in fake_slurm.read("job.sbatch").splitlines() if line.startswith("#SBATCH")]
    assert {"--signal=B:USR1@120", "--requeue", "--open-mode=append", "--ntasks-per-node=1"} <= set(directives)

    wait_until(lambda: "train: training" in fake_slurm.events(), "the training to start")
    os.kill(fake_slurm.pid("job.pid"), signal.SIGUSR1)  # what --signal=B:USR1@120 sends to the batch script
    assert fake_slurm.exit_status() == 0  # the second start's
    assert fake_slurm.events() == [f"{TRAIN} (start 0)", "train: training", f"scancel --signal=TERM {JOB_ID}",
                                   "train: SIGTERM", f"scontrol requeue {JOB_ID}", f"{TRAIN} (start 1)"]


def test_train_sbatch_on_sigterm_waits_for_the_training_and_does_not_requeue(fake_slurm, tmp_path):
    """scancel: Slurm sends SIGTERM to the batch script and to every step."""
    submit(fake_slurm, str(SCRIPT), "data=moons", cwd=tmp_path)
    wait_until(lambda: "train: training" in fake_slurm.events(), "the training to start")
    os.kill(fake_slurm.pid("job.pid"), signal.SIGTERM)
    os.kill(fake_slurm.pid("step.pids"), signal.SIGTERM)
    assert fake_slurm.exit_status() == 128 + signal.SIGTERM
    assert fake_slurm.events() == [f"{TRAIN} (start 0)", "train: training", "train: SIGTERM",
                                   f"scontrol show job {JOB_ID}"]  # PreemptTime=None: no requeue
    assert ("SIGTERM: waiting for the training to save and stop; requeueing only a preempted job"
            in fake_slurm.read("job.out"))
    assert last_line(fake_slurm) == (
        f"train.sbatch: the training stopped on a signal and saved (exit 143); not requeued: RUN_DIR=runs/train-{JOB_ID} "
        f"sbatch scripts/slurm/train.sbatch ARGS carries it on")


def test_train_sbatch_does_not_requeue_a_job_cancelled_after_the_time_limits_warning(fake_slurm, tmp_path):
    """USR1 (the time limit is near), then scancel while the training saves: the job is to end."""
    submit(fake_slurm, str(SCRIPT), "data=moons", cwd=tmp_path)
    wait_until(lambda: "train: training" in fake_slurm.events(), "the training to start")
    script = fake_slurm.pid("job.pid")
    fake_scancel = Path(fake_slurm.env["PATH"].split(":")[0]) / "scancel"  # the step stops only once the script
    fake_scancel.write_text(fake_scancel.read_text().replace("for pid", "sleep 1; for pid"))  # has its SIGTERM too
    os.kill(script, signal.SIGUSR1)
    wait_until(lambda: "time limit is near" in fake_slurm.read("job.out"), "the script's USR1 trap")
    os.kill(script, signal.SIGTERM)
    assert fake_slurm.exit_status() == 128 + signal.SIGTERM
    assert "scontrol requeue" not in fake_slurm.read("events")
    assert last_line(fake_slurm).startswith("train.sbatch: the training stopped on a signal and saved (exit 143); not "
                                            "requeued")


def test_train_sbatch_quotes_the_run_directory_for_hydra(fake_slurm, tmp_path):
    """A comma, an `=` or a `$` in RUN_DIR would be read by Hydra's grammar (a list, a key) without quotes."""
    submitted = subprocess.run(["sbatch", str(SCRIPT), "data=moons"], cwd=tmp_path,
                               env={**os.environ, **fake_slurm.env, "RUN_DIR": "runs/a,b=$c"}, capture_output=True,
                               text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    wait_until(lambda: "train: training" in fake_slurm.events(), "the training to start")
    assert fake_slurm.events()[0] == "train hydra.run.dir='runs/a,b=$c' trainer.resume=auto data=moons (start 0)"
    os.kill(fake_slurm.pid("step.pids"), signal.SIGTERM)
    fake_slurm.exit_status()


def test_train_sbatch_requeues_a_job_preempted_with_a_grace_time_once_the_training_has_saved(fake_slurm, tmp_path):
    """PreemptMode=REQUEUE with a GraceTime: Slurm sends SIGTERM to the job's steps at once and gives the job a
    PreemptTime; a job that ends itself in the grace time would not be requeued by Slurm."""
    submit(fake_slurm, str(SCRIPT), "data=moons", cwd=tmp_path)
    wait_until(lambda: "train: training" in fake_slurm.events(), "the training to start")
    (fake_slurm.folder / "preempt_time").write_text("2026-11-30T02:00:00\n")
    os.kill(fake_slurm.pid("step.pids"), signal.SIGTERM)
    assert fake_slurm.exit_status() == 0  # the second start's
    assert fake_slurm.events() == [f"{TRAIN} (start 0)", "train: training", "train: SIGTERM",
                                   f"scontrol show job {JOB_ID}", f"scontrol requeue {JOB_ID}",
                                   f"{TRAIN} (start 1)"]
    assert ("train.sbatch: Slurm is preempting the job (PreemptTime=2026-11-30T02:00:00): requeueing it"
            in fake_slurm.read("job.out"))
    assert ("train.sbatch: the training stopped on a signal and saved (exit 143); the job is requeued and will carry "
            f"on from its last.pt in runs/train-{JOB_ID}") in fake_slurm.read("job.out")
    assert last_line(fake_slurm) == f"train.sbatch: the training has ended (exit 0); its results are in runs/train-{JOB_ID}"


def test_train_sbatch_does_not_requeue_when_scontrol_cannot_tell(fake_slurm, tmp_path):
    submit(fake_slurm, str(SCRIPT), "data=moons", cwd=tmp_path)
    wait_until(lambda: "train: training" in fake_slurm.events(), "the training to start")
    (fake_slurm.folder / "preempt_time").write_text("2026-11-30T02:00:00\n")
    scontrol = Path(fake_slurm.env["PATH"].split(":")[0]) / "scontrol"
    scontrol.write_text(scontrol.read_text().replace("case $1 in", "[ \"$2\" = job ] && { echo 'slurm_load_jobs "
                                                     "error: Unable to contact slurm controller' >&2; exit 1; }\n"
                                                     "case $1 in"))
    os.kill(fake_slurm.pid("step.pids"), signal.SIGTERM)
    assert fake_slurm.exit_status() == 128 + signal.SIGTERM
    assert "scontrol requeue" not in fake_slurm.read("events")
    assert (f"train.sbatch: scontrol show job {JOB_ID} failed (slurm_load_jobs error: Unable to contact slurm "
            f"controller): not requeueing" in fake_slurm.read("job.out"))


# --- hydra/launcher=slurm ---------------------------------------------------------------------------------------


def test_a_job_stopped_by_slurm_is_requeued_by_submitit_and_carries_on_in_its_directory(fake_slurm, tmp_path):
    """The whole path, with the launcher's defaults: SIGUSR2 ahead of the time limit stops `train` at step 7, which
    saves and hands the signal on to submitit; submitit checkpoints the job's call and runs `scontrol requeue`; the
    job runs again under the same id, in the same directory, resumes from last.pt and ends with the steps of a run
    never stopped."""
    sweep = tmp_path / "sweep"
    process = TrainProcess("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={sweep}",
                           MODEL, "data=xor", "model.hidden_sizes=[32]", "data.batch_size=70", "trainer.max_epochs=3",
                           "trainer.curves=false", pause_at=7, folder=tmp_path / "process", env=fake_slurm.env)
    try:
        process.wait_until_paused()
        os.kill(fake_slurm.pid("step.pids"), signal.SIGUSR2)  # the job's python: srun became it
        job_dir = sweep / "0"
        wait_until(lambda: "SIGUSR2: finishing this step" in (job_dir / "train.log").read_text(), "the handler")
    finally:
        process.go_on()
    assert process.wait() == 0, process.stderr
    assert fake_slurm.exit_status() == 0  # the job's second start

    submission = fake_slurm.read("job.sbatch")
    for directive in ("--signal=USR2@120", "--requeue", "--time=240", "--cpus-per-task=2", "--open-mode=append"):
        assert f"#SBATCH {directive}\n" in submission
    # Nothing a CPU-only or small node lacks, and the partition left to Slurm.
    asked = [line.split("=")[0] for line in submission.splitlines() if line.startswith("#SBATCH ")]
    assert not {"#SBATCH --gpus-per-node", "#SBATCH --gres", "#SBATCH --mem", "#SBATCH --partition"} & set(asked)
    assert f"-m submitit.core._submit {sweep}/.submitit/%j" in submission.splitlines()[-1]
    assert submission.splitlines()[-1].startswith("srun --unbuffered --output")

    assert fake_slurm.events() == [f"scontrol requeue {JOB_ID}"]
    assert sorted(path.name for path in sweep.iterdir()) == [".submitit", "0", "multirun.yaml"]
    assert "trainer.resume=auto" in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
    log = (job_dir / "train.log").read_text()
    assert "SIGUSR2 goes on to submitit.core.job_environment.SignalHandler.checkpoint_and_try_requeue" in log
    assert "0 epochs and 7 steps done" in log  # the second start resumed from the first one's last.pt
    summary = json.loads((job_dir / "summary.json").read_text())
    assert (summary["stop_reason"], summary["epochs"], summary["steps"]) == ("max_epochs", 3, 30)


UNCOMPLETED_SWEEP = """
import sys
import submitit
from submitit.core import utils
from trainer.cli import train

error = getattr(utils, sys.argv[1])(sys.argv[2])

class UncompletedJob:
    job_id = "4242_0"

    def done(self):
        return True

    def results(self):
        raise error

submitit.AutoExecutor.map_array = lambda self, function, *arguments: [UncompletedJob()]
sys.argv = ["train", "-m", "hydra/launcher=slurm", *sys.argv[3:]]
train()
"""
"""`train -m hydra/launcher=slurm ARGS` whose one job submitit reports uncompleted when the launcher asks for its
result: submitit's error class and message are argv 1 and 2. (Hydra loads its launcher plugins afresh, so the
launcher itself cannot be patched before it runs.)"""

SUBMITIT_FOLDER = "/sweep/.submitit/4242_0"
SUBMITIT_TRACE = "-" * 22


@pytest.mark.parametrize("error, message, said", [
    # The job's SIGUSR2 handler (submitit's, which train hands the signal on to) found no requeue left.
    ("FailedJobError",
     f"Job (task=0) failed during processing with trace:\n{SUBMITIT_TRACE}\nTraceback (most recent call last):\n"
     f"  File \"submitit/core/job_environment.py\", line 226, in checkpoint_and_try_requeue\n"
     f"submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many times.\n"
     f"{SUBMITIT_TRACE}\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n"
     f"  - {SUBMITIT_FOLDER}/4242_0_0_log.err\n  - {SUBMITIT_FOLDER}/4242_0_0_log.out",
     "Slurm job 4242_0 failed: UncompletedJobError: Job not requeued because: timed-out too many times.; it reached "
     "its time limit and was not requeued (hydra.launcher.max_num_timeout caps the requeues, "
     "hydra.launcher.timeout_min sets the limit): the sweep run again in the same hydra.sweep.dir carries it on from "
     f"the last.pt it saved (its log: {SUBMITIT_FOLDER}/4242_0_0_log.err)"),
    # Killed by Slurm at its time limit without a word from the job.
    ("UncompletedJobError",
     f"Job 4242_0 (task: 0) with path {SUBMITIT_FOLDER}/4242_0_0_result.pkl\n"
     f"has not produced any output (state: TIMEOUT)\nError stream produced:\n{'-' * 40}\nslurmstepd: CANCELLED",
     "Slurm job 4242_0 ended without a result (Slurm state TIMEOUT); it reached its time limit and was not requeued "
     "(hydra.launcher.max_num_timeout caps the requeues, hydra.launcher.timeout_min sets the limit): the sweep run "
     "again in the same hydra.sweep.dir carries it on from the last.pt it saved "
     f"(its log: {SUBMITIT_FOLDER}/4242_0_0_log.err)"),
    ("UncompletedJobError",
     f"Job 4242_0 (task: 0) with path {SUBMITIT_FOLDER}/4242_0_0_result.pkl\n"
     f"has not produced any output (state: CANCELLED by 1000)\nNo output/error stream produced ! Check: x",
     f"Slurm job 4242_0 ended without a result (Slurm state CANCELLED by 1000) "
     f"(its log: {SUBMITIT_FOLDER}/4242_0_0_log.err)"),
], ids=["timeouts-used-up", "killed-at-time-limit", "cancelled"])
def test_a_sweep_job_that_ends_without_a_result_is_reported_in_one_line(tmp_path, error, message, said):
    result = subprocess.run([sys.executable, "-c", UNCOMPLETED_SWEEP, error, message,
                             f"hydra.sweep.dir={tmp_path / 'sweep'}", "data=moons"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"train: error: {said}"
    assert "Traceback" not in result.stderr


# --- hydra/launcher=submitit_local ------------------------------------------------------------------------------

def test_submitit_local_runs_a_sweep_of_two_jobs_each_in_its_own_directory(tmp_path):
    elsewhere, sweep = tmp_path / "elsewhere", tmp_path / "sweep"
    elsewhere.mkdir()
    result = train("-m", "hydra/launcher=submitit_local", "data=moons", "optimizer=sgd,adam",
                   "trainer.max_epochs=2", "trainer.curves=false", f"hydra.sweep.dir={sweep}", cwd=elsewhere)
    assert_succeeded(result)
    assert sorted(path.name for path in sweep.iterdir()) == [".submitit", "0", "1", "multirun.yaml"]
    for job, optimizer in (("0", "sgd"), ("1", "adam")):
        assert f"optimizer={optimizer}" in OmegaConf.load(sweep / job / ".hydra" / "overrides.yaml")
        assert json.loads((sweep / job / "summary.json").read_text())["epochs"] == 2
    assert list(elsewhere.iterdir()) == [], "a job wrote outside the sweep directory"

