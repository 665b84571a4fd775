"""How fast, and in how much memory, `data=csv` and `data=parquet` read a large table, beside pandas.read_csv.

    python scripts/bench_tables.py                 # 1,000,000 rows x 21 numeric columns, 3 rounds
    python scripts/bench_tables.py --rows 100000 --rounds 1     # a quick look

The table (20 float features written with 6 decimals, and an integer target of 5 classes) is written once with
NumPy into a temporary folder, as a .csv, a .csv.gz and a .parquet. Each case then runs in a child process of its
own, the cases in turn for a few rounds (medians shown; a time against pandas' is the median of the ratios within
each round), and reports what resource.getrusage says of it (pandas must be installed: pip install pandas):
  pandas.read_csv    `import pandas`, then pandas.read_csv(path): the reference
  read_csv           trainer.data.table.read_csv(path, "y"), as data=csv calls it (pyarrow)
  read_csv .gz       the same, of the gzip-compressed file
  read_parquet       trainer.data.parquet.read_parquet(path, "y"), as data=parquet calls it
`import` is the reader's own (pandas; pyarrow for ours: trainer itself, with torch, is imported before the clock
starts, as `train` has it by then). `rise` is how far the peak RSS rose above the RSS before the read: the memory the
read itself took. Goals (issue 18): read_csv's load within 1.5x of pandas.read_csv, its rise within 3x of the
float32 table.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = "y"
CASES = ("pandas.read_csv", "read_csv", "read_csv .gz", "read_parquet")
GOALS = {"load_vs_pandas": 1.5, "rise_vs_float32": 3.0}


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
    with open(paths["csv"], "rb") as source, gzip.open(paths["gz"], "wb") as compressed:
        shutil.copyfileobj(source, compressed)
    pq.write_table(pa.table({**{name: features[:, j] for j, name in enumerate(names)}, TARGET: target}),
                   paths["parquet"])
    return paths


def rss_mb() -> float:
    """The resident memory now (Linux), or else the peak so far."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def child(case: str, path: str) -> dict:
    """One case in this process: the reader's import, then the read, timed; the memory before and after."""
    if case != "pandas.read_csv":
        importlib.import_module("trainer.data.table")  # trainer and torch, before the clock, as `train` has them
    started = time.perf_counter()
    if case == "pandas.read_csv":
        import pandas

        read = pandas.read_csv
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
    return {"import_s": imported - started, "read_s": done - imported, "peak_rss_mb": peak_rss_mb(),
            "rise_mb": peak_rss_mb() - before}


def run_child(case: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", case, str(path)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table_rows(rows: int = 1_000_000, columns: int = 21, rounds: int = 3) -> list[dict]:
    """Write the table, then measure each case `rounds` times, in turn, each in a child process: a row per case,
    the median of each figure, of its time against pandas.read_csv's in the same round, and its rise against the
    float32 table."""
    folder = Path(tempfile.mkdtemp(prefix="bench_tables_"))
    try:
        paths = write_tables(folder, rows, columns)
        path_of = {"pandas.read_csv": paths["csv"], "read_csv": paths["csv"], "read_csv .gz": paths["gz"],
                   "read_parquet": paths["parquet"]}
        runs = {case: [] for case in CASES}
        for _ in range(rounds):
            for case in CASES:
                runs[case].append(run_child(case, path_of[case]))
        sizes = {case: path_of[case].stat().st_size / 2**20 for case in CASES}
    finally:
        shutil.rmtree(folder)
    float32_mb = rows * columns * 4 / 2**20
    results = []
    for case in CASES:
        median = {key: statistics.median(run[key] for run in runs[case]) for key in runs[case][0]}
        results.append({"case": case, "file_mb": sizes[case], **median,
                        "load_s": median["import_s"] + median["read_s"], "rise_vs_float32": median["rise_mb"] /
                        float32_mb})
    for row in results:  # paired with pandas' run of the same round, as the machine's load drifts between rounds
        pairs = list(zip(runs[row["case"]], runs[CASES[0]]))
        row["read_vs_pandas"] = statistics.median(ours["read_s"] / theirs["read_s"] for ours, theirs in pairs)
        row["load_vs_pandas"] = statistics.median((ours["import_s"] + ours["read_s"]) /
                                                  (theirs["import_s"] + theirs["read_s"]) for ours, theirs in pairs)
    return results


def markdown(results: list[dict], rows: int, columns: int, rounds: int) -> str:
    header = ("| case | file MB | import s | read s | import + read s | read / pandas | import + read / pandas | "
              "peak RSS MB | rise MB | rise / float32 table |")
    lines = [f"{rows:,} rows x {columns} columns (float32 table: {rows * columns * 4 / 2**20:.0f} MB), medians of "
             f"{rounds} rounds", "", header, "|" + "---|" * (header.count("|") - 1)]
    for row in results:
        lines.append(f"| {row['case']} | {row['file_mb']:.0f} | {row['import_s']:.2f} | {row['read_s']:.2f} | "
                     f"{row['load_s']:.2f} | {row['read_vs_pandas']:.2f}x | {row['load_vs_pandas']:.2f}x | "
                     f"{row['peak_rss_mb']:.0f} | {row['rise_mb']:.0f} | {row['rise_vs_float32']:.2f}x |")
    ours = next(row for row in results if row["case"] == "read_csv")
    lines += ["", f"Goals for read_csv: load within {GOALS['load_vs_pandas']}x of pandas.read_csv (read alone: "
                  f"{ours['read_vs_pandas']:.2f}x, import + read: {ours['load_vs_pandas']:.2f}x); rise within "
                  f"{GOALS['rise_vs_float32']}x of the float32 table ({ours['rise_vs_float32']:.2f}x)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the table (default 1,000,000)")
    parser.add_argument("--columns", type=int, default=21, help="columns, the target's included (default 21)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each case; the median is shown (default 3)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(markdown(table_rows(args.rows, args.columns, args.rounds), args.rows, args.columns, args.rounds))


if __name__ == "__main__":
    main()
