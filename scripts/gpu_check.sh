#!/usr/bin/env bash
# scripts/gpu_check.sh [OUT_DIR]: the one command that proves the project on a GPU, in under 8 minutes on one.
#
#   a) env      nvidia-smi, Python, torch, CUDA and the device                    OUT/env.txt, env.json
#   b) suite    the whole suite (tests/unit, tests/e2e), CUDA visible (-n auto)   OUT/suite.xml, suite.log
#   c) cuda     the CUDA-only tests (pytest -m cuda -n 0; they skip without CUDA) OUT/cuda.xml, cuda.log
#   d) bench    scripts/bench.py --device cuda, 1 round of 2 epochs               OUT/bench/, bench.log
#   e) summary  one table of it all, printed                                      OUT/summary.md
#
# OUT_DIR defaults to gpu_check/ in this checkout. Each step runs under `timeout` (an interrupt first, so that
# pytest and the bench still write what they have, a kill 10 s later); its output goes to OUT/<step>.log, its
# exit status and seconds to OUT/steps.tsv. Ctrl-C ends the step running and skips the rest, to the summary.
# Without a CUDA device one line says so: the suite and the CUDA tests (skipped, with their reasons) still run,
# the GPU bench does not (the syncs per step are then the suite's to check).
# Exit status: 1 when a test failed, or a step failed, ran out of time or was interrupted; 2 when all that ran
# passed but no GPU was found (nothing is proven on a GPU then); else 0. The bench's targets are reported, not
# enforced.
#
# Python: $PYTHON when set; else this checkout's .venv/bin/python when there is one; else python3 (a GPU machine's
# preinstalled torch); else python. The project must be installed for it: pip install -e ".[test]".
# GPU_CHECK_STEPS picks among "suite cuda bench" (default: all three; env and the summary always run). Time limits
# in seconds: ENV_TIMEOUT=20 SUITE_TIMEOUT=150 CUDA_TIMEOUT=120 BENCH_TIMEOUT=180 by default (470 s in all).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/gpu_check}  # (a relative OUT_DIR is the caller's, so it is made before moving to the repo)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1
if ! touch "$OUT/.writable" 2> /dev/null; then
    echo "gpu_check: cannot write to $OUT: give a folder it can write its results to" >&2
    exit 1
fi
rm -f "$OUT/.writable"
STEPS=${GPU_CHECK_STEPS:-suite cuda bench}
for name in $STEPS; do
    case $name in
        suite|cuda|bench) ;;
        *) echo "gpu_check: GPU_CHECK_STEPS names $name: the steps are suite, cuda and bench, separated by spaces" >&2
           exit 1 ;;
    esac
done
cd "$REPO" || exit 1
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$REPO/.venv/bin/python
    elif command -v python3 > /dev/null; then PYTHON=python3
    else PYTHON=python
    fi
fi
rm -rf "$OUT"/{env.txt,env.json,env.log,suite.xml,suite.log,cuda.xml,cuda.log,bench,bench.log,steps.tsv,summary.md}
INTERRUPTED=
trap 'INTERRUPTED=1' INT TERM

selected() { [[ " $STEPS " == *" $1 "* ]] && [ -z "$INTERRUPTED" ]; }

# step NAME LIMIT COMMAND...: COMMAND under `timeout`, its output on the console and in OUT/NAME.log.
step() {
    local name=$1 limit=$2 start rc seconds
    shift 2
    echo "== $name (at most $limit s): $*"
    start=$(date +%s.%N)
    timeout --foreground -s INT -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=$?
    seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ -n "$INTERRUPTED" ]; then rc=130; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$seconds" "$limit" >> "$OUT/steps.tsv"
    echo "== $name: exit status $rc after $seconds s$([ "$rc" = 124 ] && echo ' (ran out of time)')"
}

# a) The environment: what nvidia-smi says, then Python's view (env.json, for the summary).
environment() {
    if command -v nvidia-smi > /dev/null; then
        timeout 15 nvidia-smi || echo "nvidia-smi failed (exit status $?)"
    else
        echo "nvidia-smi: not on the PATH"
    fi
    echo
    "$PYTHON" - "$OUT/env.json" <<'EOF'
import importlib.metadata
import importlib.util
import json
import platform
import sys

info = {"python": platform.python_version(), "executable": sys.executable, "cuda": False}
try:
    import torch

    info.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda=torch.cuda.is_available())
    if info["cuda"]:
        properties = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), devices=torch.cuda.device_count(),
                    capability="%d.%d" % torch.cuda.get_device_capability(0),
                    memory_gb=round(properties.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                    bf16=torch.cuda.is_bf16_supported())
except Exception as error:  # a broken torch is what this step is to show
    info["torch_error"] = f"{type(error).__name__}: {error}"
for package in ("hydra-torch-trainer", "hydra-core", "torchvision", "triton", "pytest", "pytest-xdist"):
    try:
        info[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        info[package] = None
spec = importlib.util.find_spec("trainer")
info["trainer_from"] = spec.origin if spec else None
for key, value in info.items():
    print(f"{key}: {value}")
with open(sys.argv[1], "w") as file:
    json.dump(info, file, indent=1)
EOF
}

export -f environment
export PYTHON OUT
step env "${ENV_TIMEOUT:-20}" bash -c environment
mv "$OUT/env.log" "$OUT/env.txt"
CUDA=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("cuda", False))' "$OUT/env.json" \
       2> /dev/null || echo False)
if [ "$CUDA" != True ]; then
    echo "gpu_check: no CUDA device found: the tests run on the CPU (the CUDA ones skip), the GPU bench is skipped"
fi
if ! "$PYTHON" -c 'import trainer' 2> /dev/null; then
    echo "gpu_check: $PYTHON cannot import trainer: install the project first (pip install -e \".[test]\")"
fi

# b) The whole suite; pyproject's addopts leave out the Slurm cluster's tests.
if selected suite; then
    step suite "${SUITE_TIMEOUT:-150}" "$PYTHON" -m pytest -q -p no:cacheprovider -n auto --junitxml="$OUT/suite.xml"
fi
# c) The CUDA-only tests, in one process; without CUDA they skip, saying why.
if selected cuda; then
    step cuda "${CUDA_TIMEOUT:-120}" "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -n 0 --junitxml="$OUT/cuda.xml"
fi
# d) The GPU bench: one round of 2 epochs (the first warms up), each case stopped after 90 s at most.
if selected bench && [ "$CUDA" = True ]; then
    step bench "${BENCH_TIMEOUT:-180}" "$PYTHON" scripts/bench.py --device cuda --rounds 1 --epochs 2 \
        --case-timeout 90 --out "$OUT/bench"
elif selected bench; then
    echo "== bench: skipped: no CUDA device (the GPU bench needs one)"
fi

# e) One table.
"$PYTHON" "$REPO/scripts/gpu_check_summary.py" "$OUT" "$STEPS" "${INTERRUPTED:-0}"
