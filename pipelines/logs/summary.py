"""A short, human-readable summary of a log directory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.logs.schema import find_table, read_table


def summarize_logs(logs: Path) -> dict[str, object]:
    req_path, imp_path = find_table(logs, "requests"), find_table(logs, "impressions")
    if req_path is None or imp_path is None:
        raise FileNotFoundError(f"{logs}: needs requests and impressions tables")
    req = read_table(req_path)
    imp = read_table(
        imp_path,
        columns=["request_id", "position", "clicked"]
        + (["ordered"] if "ordered" in pd.read_parquet(imp_path).columns else [])
        if imp_path.suffix != ".csv"
        else None,
    )
    per_req = imp.groupby("request_id").size()
    out: dict[str, object] = {
        "requests": len(req),
        "impressions": len(imp),
        "users": int(req["user_id"].nunique()),
        "days": round((req["ts"].max() - req["ts"].min()).total_seconds() / 86400, 1)
        if len(req)
        else 0,
        "candidates_per_request": {
            "min": int(per_req.min()),
            "median": float(per_req.median()),
            "max": int(per_req.max()),
        }
        if len(per_req)
        else {},
        "ctr": round(float(imp["clicked"].mean()), 4) if len(imp) else 0.0,
        "ctr_at_1": round(float(imp.loc[imp["position"] == 1, "clicked"].mean()), 4)
        if len(imp)
        else 0.0,
        "clicks_per_request": round(float(imp["clicked"].sum()) / max(1, len(req)), 3),
    }
    if "ordered" in imp.columns:
        out["orders_per_request"] = round(float(imp["ordered"].sum()) / max(1, len(req)), 3)
    if "randomized" in req.columns:
        out["randomized_share"] = round(float(req["randomized"].mean()), 4)
    items = find_table(logs, "items")
    if items is not None:
        out["items"] = len(read_table(items, columns=["item_id"]))
    return out
