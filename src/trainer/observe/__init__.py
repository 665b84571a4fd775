"""What a run shows and records, read back: a run's records (run_records), several runs' learning curves on one
figure (compared_runs), and a sweep's jobs in one table, best first (sweep_report)."""

from trainer.observe.compared_runs import draw_curves, job_labels, plot, shared_overrides
from trainer.observe.run_records import (
    JOB_FILE_MAX_BYTES,
    SUMMARY_TYPES,
    Job,
    UnreadableFile,
    find_job_dirs,
    read_job,
    read_overrides,
    read_record_text,
    read_summary,
)
from trainer.observe.sweep_report import (
    NO_SUMMARY,
    describe_ranking,
    direction,
    format_cell,
    rank,
    read_sweep,
    report,
    table_rows,
    to_markdown,
    union_in_order,
    write_csv,
)

__all__ = [
    "JOB_FILE_MAX_BYTES",
    "NO_SUMMARY",
    "SUMMARY_TYPES",
    "Job",
    "UnreadableFile",
    "describe_ranking",
    "direction",
    "draw_curves",
    "find_job_dirs",
    "format_cell",
    "job_labels",
    "plot",
    "rank",
    "read_job",
    "read_overrides",
    "read_record_text",
    "read_summary",
    "read_sweep",
    "report",
    "shared_overrides",
    "table_rows",
    "to_markdown",
    "union_in_order",
    "write_csv",
]
