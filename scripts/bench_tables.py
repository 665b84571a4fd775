"""The table cases of scripts/bench.py: how fast, and in how much memory, `data=csv` and `data=parquet` read a large
table, beside pandas.read_csv. `python scripts/bench.py --only tables [--table-rows N] [--rounds R]`.

The table (20 float features written with 6 decimals, and an integer target of 5 classes) is written once with
NumPy into a temporary folder, as a .csv, a .csv.gz and a .parquet. Each case then runs in a child process of its
own (this file), the cases in turn for the rounds (medians shown; a time against pandas' is the median of the
ratios within each round, as the load of a shared machine drifts between rounds):
  pandas.read_csv    `import pandas`, then pandas.read_csv(path): the reference (skipped when pandas is missing)
  read_csv           trainer.data.table.read_csv(path, "y"), as data=csv calls it (pyarrow)
  read_csv .gz       the same, of the gzip-compressed file
  read_parquet       trainer.data.parquet.read_parquet(path, "y"), as data=parquet calls it
`import` is the reader's own (pandas; pyarrow for ours: trainer itself, with torch, is imported before the clock
starts, as `train` has it by then); `load` is import + read. `rise` is how far the peak RSS (VmHWM, fresh in each
child) rose above the RSS after the imports: the memory the read itself took. Targets (issue 18): read_csv's load
within 1.5x of pandas.read_csv's, its rise within 3x of the float32 table.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import bench

TARGET = "y"
PANDAS = "pandas.read_csv"
CASES = (PANDAS, "read_csv", "read_csv .gz", "read_parquet")
TARGETS = {"load_vs_pandas": 1.5, "rise_vs_float32": 3.0}


def write_tables(folder: Path, rows: int, columns: int, seed: int = 0) -> dict[str, Path]:
    """The table as `folder`/table.csv, .csv.gz and .parquet: columns - 1 normal features and the integer target."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, columns - 1))
    target = rng.integers(0, 5, rows)
    names = [f"x{j}" for j in range(columns - 1)]
    paths = {"csv": folder / "table.csv", "gz": folder / "table.csv.gz", "parquet": folder / "table.parquet"}
    with open(paths["csv"], "w") as file:
        file.write(",".join([*names, TARGET]) + "\n")
        np.savetxt(file, np.column_stack([features, target]), delimiter=",", fmt=["%.6f"] * (columns - 1) + ["%d"])
    with open(paths["csv"], "rb") as source, gzip.open(paths["gz"], "wb", compresslevel=6) as compressed:
        shutil.copyfileobj(source, compressed)
    pq.write_table(pa.table({**{name: features[:, j] for j, name in enumerate(names)}, TARGET: target}),
                   paths["parquet"])
    return {PANDAS: paths["csv"], "read_csv": paths["csv"], "read_csv .gz": paths["gz"],
            "read_parquet": paths["parquet"]}


def rss_mb() -> float:
    """The resident memory now (Linux), or else the peak so far."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    except OSError:
        return bench.peak_rss_gb() * 1024


def child(case: str, path: str) -> dict:
    """One case in this process: the reader's import, then the read, timed; the memory before and after."""
    if case != PANDAS:
        importlib.import_module("trainer.data.table")  # trainer and torch, before the clock, as `train` has them
    started = time.perf_counter()
    if case == PANDAS:
        import pandas

        def read(table: str):
            return pandas.read_csv(table)
    elif case == "read_parquet":
        from trainer.data.parquet import read_parquet

        def read(table: str):
            return read_parquet(table, TARGET)
    else:
        importlib.import_module("trainer.data.csv_arrow")  # pyarrow: what data=csv imports once it reads a table
        from trainer.data.table import read_csv

        def read(table: str):
            return read_csv(table, TARGET)
    imported = time.perf_counter()
    before = rss_mb()
    read(path)
    done = time.perf_counter()
    peak = bench.peak_rss_gb() * 1024
    return {"import_s": imported - started, "read_s": done - imported, "peak_rss_mb": peak, "rise_mb": peak - before}


def measure(rows: int, columns: int, rounds: int) -> dict[str, dict]:
    """Write the table, then each case `rounds` times, in turn, each in a child process: per case, the median of
    each figure, of its load and read against pandas.read_csv's in the same round, and its rise against the
    float32 table."""
    cases = CASES if importlib.util.find_spec("pandas") else CASES[1:]
    folder = Path(tempfile.mkdtemp(prefix="bench_tables_"))
    try:
        paths = write_tables(folder, rows, columns)
        runs = {case: [] for case in cases}
        for _ in range(rounds):
            for case in cases:
                runs[case].append(bench.run_child(Path(__file__), [case, str(paths[case])]))
        sizes = {case: paths[case].stat().st_size / 2**20 for case in cases}
    finally:
        shutil.rmtree(folder)
    float32_mb = rows * columns * 4 / 2**20
    results = {}
    for case in cases:
        median = {key: statistics.median(run[key] for run in runs[case]) for key in runs[case][0]}
        results[case] = {"file_mb": sizes[case], **median, "load_s": median["import_s"] + median["read_s"],
                         "rise_vs_float32": median["rise_mb"] / float32_mb}
        if PANDAS in runs:  # paired with pandas' run of the same round
            pairs = list(zip(runs[case], runs[PANDAS]))
            results[case]["read_vs_pandas"] = statistics.median(ours["read_s"] / theirs["read_s"]
                                                                for ours, theirs in pairs)
            results[case]["load_vs_pandas"] = statistics.median(
                (ours["import_s"] + ours["read_s"]) / (theirs["import_s"] + theirs["read_s"]) for ours, theirs in pairs)
    return {"rows": rows, "columns": columns, "rounds": rounds, "float32_mb": float32_mb, "cases": results}


def table(figures: dict) -> tuple[list[str], list[tuple]]:
    """The cases' table, and bench.py's checks of read_csv against its targets: (measure, value, target, met)."""
    lines = [f"Tables: {figures['rows']:,} rows x {figures['columns']} columns (float32 table: "
             f"{figures['float32_mb']:.0f} MB), medians of {figures['rounds']} rounds\n",
             "| case | file MB | import s | read s | load s | load / pandas | peak RSS MB | rise MB | rise / float32 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, r in figures["cases"].items():
        versus = f"{r['load_vs_pandas']:.2f}x" if "load_vs_pandas" in r else ""
        lines.append(f"| {case} | {r['file_mb']:.0f} | {r['import_s']:.2f} | {r['read_s']:.2f} | {r['load_s']:.2f} | "
                     f"{versus} | {r['peak_rss_mb']:.0f} | {r['rise_mb']:.0f} | {r['rise_vs_float32']:.2f}x |")
    ours = figures["cases"]["read_csv"]
    if "load_vs_pandas" in ours:
        load = ("read_csv load / pandas.read_csv", f"{ours['load_vs_pandas']:.2f}x "
                f"(read alone {ours['read_vs_pandas']:.2f}x)", f"<= {TARGETS['load_vs_pandas']}x",
                ours["load_vs_pandas"] <= TARGETS["load_vs_pandas"])
    else:
        lines.append("\npandas is not installed: read_csv's load is not compared (pip install pandas)")
        load = ("read_csv load / pandas.read_csv", "pandas missing", f"<= {TARGETS['load_vs_pandas']}x", None)
    rise = ("read_csv memory rise / float32 table", f"{ours['rise_vs_float32']:.2f}x",
            f"<= {TARGETS['rise_vs_float32']}x", ours["rise_vs_float32"] <= TARGETS["rise_vs_float32"])
    return lines, [load, rise]


def main() -> None:
    """A child: one case, its figures written to --result (bench.run_child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=CASES)
    parser.add_argument("path")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    Path(args.result).write_text(json.dumps(child(args.case, args.path)))


if __name__ == "__main__":
    main()
