"""``ranker validate-logs DIR``: check logs against the schema and count bad rows by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines.logs.clean import (
    clean_entities,
    clean_impressions,
    clean_requests,
    drop_requests_without_impressions,
)
from pipelines.logs.schema import TABLES, find_table, read_table, table_columns


@dataclass
class LogReport:
    rows: dict[str, int] = field(default_factory=dict)  # rows read per table
    usable_rows: dict[str, int] = field(default_factory=dict)
    bad: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> reason -> rows
    fatal: list[str] = field(default_factory=list)  # why the logs cannot be used at all
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.fatal

    def to_dict(self) -> dict[str, object]:
        return {
            "usable": self.usable,
            "rows": self.rows,
            "usable_rows": self.usable_rows,
            "bad_rows": self.bad,
            "fatal": self.fatal,
            "notes": self.notes,
        }


def check_logs(logs: Path) -> LogReport:
    """Read and check all four tables; never raises on bad data, reports it instead."""
    rep = LogReport()
    frames: dict[str, pd.DataFrame] = {}
    for spec in TABLES:
        path = find_table(logs, spec.name)
        if path is None:
            if spec.must_exist:
                n = spec.name
                rep.fatal.append(f"{n}: no {n}.parquet, {n}/ or {n}.csv in {logs}")
            else:
                rep.notes.append(f"{spec.name}: absent (optional)")
            continue
        try:
            cols = table_columns(path)
        except Exception as e:  # unreadable file: report, do not crash
            rep.fatal.append(f"{spec.name}: cannot read {path.name}: {e}")
            continue
        missing = [c for c in spec.required if c not in cols]
        if missing:
            rep.bad.setdefault(spec.name, {})["missing_column"] = len(missing)
            rep.fatal.append(f"{spec.name}: missing required column(s) {', '.join(missing)}")
            continue
        frames[spec.name] = read_table(path)
        rep.rows[spec.name] = len(frames[spec.name])

    def record(table: str, counts: Counter[str]) -> None:
        if counts:
            bucket = rep.bad.setdefault(table, {})
            for k, v in counts.items():
                bucket[k] = bucket.get(k, 0) + v

    if "requests" in frames:
        req, c = clean_requests(frames["requests"])
        record("requests", c)
        if "impressions" in frames:
            imp, c = clean_impressions(frames["impressions"], pd.Index(req["request_id"]))
            record("impressions", c)
            req, c = drop_requests_without_impressions(req, imp)
            record("requests", c)
            rep.usable_rows["impressions"] = len(imp)
            if not {"ordered"} <= set(imp.columns):
                rep.notes.append("impressions: no 'ordered' column; labels are clicks only")
        rep.usable_rows["requests"] = len(req)
        if len(req) == 0 and not rep.fatal:
            rep.fatal.append("no usable request with impressions")
    for name, key in (("items", "item_id"), ("users", "user_id")):
        if name in frames:
            df, c = clean_entities(frames[name], key)
            record(name, c)
            rep.usable_rows[name] = len(df)
            if len(df.columns) == 1:
                rep.notes.append(f"{name}: no attribute columns (generic features only)")
    return rep


def format_report(rep: LogReport) -> str:
    lines = [f"{'table':<12} {'rows':>10} {'usable':>10}  bad rows by reason"]
    for spec in TABLES:
        if spec.name not in rep.rows and spec.name not in rep.bad:
            continue
        bad = rep.bad.get(spec.name, {})
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(bad.items())) or "none"
        lines.append(
            f"{spec.name:<12} {rep.rows.get(spec.name, 0):>10} "
            f"{rep.usable_rows.get(spec.name, 0):>10}  {reasons}"
        )
    lines += [f"note: {n}" for n in rep.notes]
    lines += [f"FATAL: {f}" for f in rep.fatal]
    lines.append("usable: yes" if rep.usable else "usable: NO")
    return "\n".join(lines)
