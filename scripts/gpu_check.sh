#!/usr/bin/env bash
# scripts/gpu_check.sh [OUT_DIR]: the one command that proves the project on a GPU, in under 8 minutes on one.
#
#   a) env      nvidia-smi, Python, torch, CUDA and the device                    OUT/env.txt, env.json
#   b) suite    the whole unit suite, CUDA visible (pytest -n auto)               OUT/suite.xml, suite.log
#   c) cuda     the CUDA-only tests (pytest -m cuda -n 0; they skip without CUDA) OUT/cuda.xml, cuda.log
#   d) bench    scripts/bench.py --device cuda, 1 round of 2 epochs               OUT/bench/, bench.log
#   e) summary  one table of it all, printed                                      OUT/summary.md
#
# OUT_DIR defaults to gpu_check/ in this checkout. Each step runs under `timeout` (an interrupt first, so that
# pytest and the bench still write what they have, a kill 10 s later); its output goes to OUT/<step>.log, its
# exit status and seconds to OUT/steps.tsv. Ctrl-C ends the step running and skips the rest, to the summary.
# Without a CUDA device one line says so: the suite and the CUDA tests (skipped, with their reasons) still run,
# the GPU bench does not (the syncs per step are then the suite's to check).
# Exit status: 1 when a test failed, or a step failed, ran out of time or was interrupted; else 0. The bench's
# targets are reported, not enforced.
#
# Python: $PYTHON when set; else this checkout's .venv/bin/python when there is one; else python3 (a GPU machine's
# preinstalled torch); else python. The project must be installed for it: pip install -e ".[test]".
# GPU_CHECK_STEPS picks among "suite cuda bench" (default: all three; env and the summary always run). Time limits
# in seconds: ENV_TIMEOUT=20 SUITE_TIMEOUT=150 CUDA_TIMEOUT=120 BENCH_TIMEOUT=180 by default (470 s in all).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$REPO/.venv/bin/python
    elif command -v python3 > /dev/null; then PYTHON=python3
    else PYTHON=python
    fi
fi
OUT=${1:-$REPO/gpu_check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1
rm -rf "$OUT"/{env.txt,env.json,env.log,suite.xml,suite.log,cuda.xml,cuda.log,bench,bench.log,steps.tsv,summary.md}
STEPS=${GPU_CHECK_STEPS:-suite cuda bench}
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
for package in ("trainer", "hydra-core", "torchvision", "triton", "pytest", "pytest-xdist"):
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
"$PYTHON" - "$OUT" "$STEPS" "${INTERRUPTED:-0}" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, steps_selected, interrupted = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3] == "1"
rows = []  # (check, result, target, met: True, False or None)
problems = []


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


steps = {}
if (out / "steps.tsv").exists():
    for line in (out / "steps.tsv").read_text().splitlines():
        name, rc, seconds, limit = line.split("\t")
        steps[name] = (int(rc), float(seconds), limit)


def ran(name: str) -> str:
    rc, seconds, limit = steps[name]
    how = {0: "", 124: ", ran out of time", 130: ", interrupted"}.get(rc, f", exit status {rc}")
    return f"step {seconds:.0f} s of {limit} s{how}"


def not_run(name: str) -> str:
    if name not in steps_selected:
        return "not run (not in GPU_CHECK_STEPS)"
    if interrupted:
        return "not run (interrupted)"
    return "pending: needs a CUDA device" if name == "bench" else "not run"


def junit(path: Path) -> dict:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failed_names": [], "skip_reasons": {},
              "slowest": []}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        if not case.get("name"):  # a test that an interrupt stopped part way, under xdist
            continue
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag: child for child in case}
        if "failure" in tags or "error" in tags:
            counts["failed" if "failure" in tags else "errors"] += 1
            counts["failed_names"].append(name)
        elif "skipped" in tags:
            counts["skipped"] += 1
            reason = tags["skipped"].get("message", "")
            counts["skip_reasons"][reason] = counts["skip_reasons"].get(reason, 0) + 1
        else:
            counts["passed"] += 1
        counts["slowest"].append((float(case.get("time") or 0), name))
    counts["seconds"] = sum(float(suite.get("time") or 0) for suite in root.iter("testsuite"))
    counts["slowest"] = [(s, n) for s, n in sorted(counts["slowest"], reverse=True)[:3] if s >= 0.1]
    return counts


def tests(name: str, label: str) -> None:
    if name not in steps:
        rows.append((label, not_run(name), "0 failed", None))
        return
    rc = steps[name][0]
    path = out / f"{name}.xml"
    if rc == 5:  # pytest: no tests collected
        rows.append((label, f"no tests collected; {ran(name)}", "0 failed", None))
        return
    if not path.exists():
        rows.append((label, f"no results ({name}.log has why); {ran(name)}", "0 failed", False))
        problems.append(f"{name}: no results")
        return
    c = junit(path)
    good = c["failed"] == 0 and c["errors"] == 0
    rows.append((label, f"{c['passed']} passed, {c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped; "
                        f"tests {c['seconds']:.0f} s, {ran(name)}", "0 failed", good and rc in (0, 1)))
    if not good:
        problems.append(f"{name}: {c['failed'] + c['errors']} failed")
        names = c["failed_names"]
        rows.append((f"{label}: failed", ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10
                                                                   else ""), "", None))
    if c["skip_reasons"] and name == "cuda":
        rows.append((f"{label}: skipped", "; ".join(f"{reason} (x{count})" for reason, count in
                                                    c["skip_reasons"].items()), "", None))
    if c["slowest"]:
        rows.append((f"{label}: slowest", ", ".join(f"{n.split('::')[-1]} {s:.1f} s" for s, n in c["slowest"]), "",
                     None))
    if rc not in (0, 1):
        problems.append(f"{name}: {ran(name)}")


env = read_json(out / "env.json")
if env.get("cuda"):
    rows.append(("device", f"{env['device']} (compute capability {env['capability']}, {env['memory_gb']} GiB"
                           f"{', x %d' % env['devices'] if env['devices'] > 1 else ''})", "", None))
else:
    rows.append(("device", "no CUDA device found" + (f" ({env['torch_error']})" if "torch_error" in env else ""),
                 "", None))
rows.append(("software", f"Python {env.get('python')}, torch {env.get('torch')}, CUDA {env.get('cuda_build')}, "
                         f"cuDNN {env.get('cudnn', 'n/a')}, triton {env.get('triton')}, trainer {env.get('trainer')} "
                         f"({env.get('trainer_from')})", "", None))
rows.append(("a) environment", ran("env") if "env" in steps else "not run", "", None))
if "env" in steps and steps["env"][0] != 0:
    problems.append(f"env: {ran('env')}")
tests("suite", "b) unit suite")
tests("cuda", "c) CUDA tests")

bench = read_json(out / "bench" / "bench.json")
if "bench" not in steps:
    rows.append(("d) bench", not_run("bench"), "", None))
else:
    rc = steps["bench"][0]
    results = bench.get("results", {})
    failed = [name for name, result in results.items() if "failed" in result]
    rows.append(("d) bench", f"{len(results)} cases, {len(failed)} failed; {ran('bench')}" if results else
                 f"no table ({ran('bench')}; bench.log has why)", "", None))
    if rc != 0:
        problems.append(f"bench: {ran('bench')}" + (f", failed: {', '.join(failed)}" if failed else ""))
    for name, r in results.items():
        if "failed" in r:
            rows.append((f"d) {name}", f"failed: {r['failed']}", "", False))
        else:
            ratio = f", {r['x_floor']:.2f} x its floor" if "x_floor" in r else ""
            rows.append((f"d) {name}", f"{r['epoch']:.3f} s / pass, {r['samples_per_s']:,.0f} samples / s{ratio}, "
                                       f"first pass {r['first_pass']:.1f} s, {r['gpu_peak_gb']:.2f} GB GPU", "", None))
    for check in bench.get("checks", []):
        rows.append((f"d) {check['measure']}", check["value"], check["target"], check["met"]))
    if not results and bench.get("rounds"):  # stopped part way: the cases it finished
        for name, r in bench["rounds"][-1].items():
            rows.append((f"d) {name} (part way)", r.get("failed") or f"passes {r['seconds']}", "", None))

met = {True: "yes", False: "NO", None: ""}
lines = ["| check | result | target | met |", "|---|---|---|---|"]
lines += [f"| {check} | {str(result).replace('|', '/')} | {target} | {met[ok]} |" for check, result, target, ok in rows]
if interrupted and not any("interrupted" in problem for problem in problems):
    problems.append("interrupted")
lines += ["", f"gpu_check: {'FAILED: ' + '; '.join(problems) if problems else 'passed'}"]
summary = "\n".join(lines)
print("\n" + summary)
(out / "summary.md").write_text(summary + "\n")
sys.exit(1 if problems else 0)
EOF
