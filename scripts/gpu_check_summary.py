"""The one table of scripts/gpu_check.sh: python scripts/gpu_check_summary.py OUT_DIR "STEPS" INTERRUPTED(0|1).

Reads what the steps left in OUT_DIR (steps.tsv, env.json, the JUnit XML of the suite and the CUDA tests, the
bench's bench.json), prints one markdown table, saves it as OUT_DIR/summary.md, and exits 1 when a test failed or
a step failed, ran out of time or was interrupted.
"""

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
    proven = good and rc in (0, 1) and c["passed"] > 0
    rows.append((label, f"{c['passed']} passed, {c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped; "
                        f"tests {c['seconds']:.0f} s, {ran(name)}", "0 failed, some passed", proven))
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
tests("suite", "b) whole suite")
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
if problems:
    verdict, code = "FAILED: " + "; ".join(problems), 1
elif not env.get("cuda"):
    verdict, code = "NOT proven on a GPU: no CUDA device was found (what ran here passed)", 2
else:
    verdict, code = "passed", 0
lines += ["", f"gpu_check: {verdict}"]
summary = "\n".join(lines)
print("\n" + summary)
(out / "summary.md").write_text(summary + "\n")
sys.exit(code)
