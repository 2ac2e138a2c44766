"""``ranker validate-logs``: every kind of bad row is counted, and the exit status says whether
the logs can be used."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ops.cli import main


def _write(
    d: Path, requests: pd.DataFrame, impressions: pd.DataFrame, **extra: pd.DataFrame
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    requests.to_parquet(d / "requests.parquet")
    impressions.to_parquet(d / "impressions.parquet")
    for name, df in extra.items():
        df.to_parquet(d / f"{name}.parquet")
    return d


def _good() -> tuple[pd.DataFrame, pd.DataFrame]:
    req = pd.DataFrame(
        {
            "request_id": ["a", "b", "c"],
            "ts": pd.to_datetime(["2026-01-01T10:00Z", "2026-01-01T11:00Z", "2026-01-02T09:00Z"]),
            "user_id": ["u1", "u2", "u1"],
            "query": ["coffee", "hotpot", "tea"],
        }
    )
    imp = pd.DataFrame(
        {
            "request_id": ["a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "x", "z", "y"],
            "position": [1, 2, 1, 2, 1],
            "clicked": [True, False, False, True, False],
        }
    )
    return req, imp


def _report(logs: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["validate-logs", str(logs), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_minimal_logs_are_usable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No 'ordered', no item or user tables, a request with one impression: all allowed.
    code, rep = _report(_write(tmp_path, *_good()), capsys)
    assert code == 0 and rep["usable"] and rep["bad_rows"] == {}
    assert rep["usable_rows"] == {"requests": 3, "impressions": 5}


def test_each_bad_row_is_counted_by_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req, imp = _good()
    req = pd.concat(
        [
            req,
            pd.DataFrame(
                {
                    "request_id": ["a", "d", "e"],
                    "ts": pd.to_datetime(["2026-01-01T10:00Z", None, "2026-01-03T00:00Z"]),
                    "user_id": ["u3", "u3", None],
                    "query": ["x", "y", "z"],
                }
            ),
        ]
    )
    imp = pd.concat(
        [
            imp,
            pd.DataFrame(
                {
                    "request_id": ["a", "nope", "b", "b", "c", "c"],
                    "item_id": ["x", "x", "w", "v", "q", "r"],
                    "position": [3, 1, 0, 2, 2, 3],  # dup (a,x); unknown; pos 0; pos 2 taken in b
                    "clicked": [False, True, False, False, "maybe", True],
                }
            ),
        ]
    )
    imp["clicked"] = imp["clicked"].astype(str)  # "True", "False", "maybe"
    code, rep = _report(_write(tmp_path, req, imp), capsys)
    assert code == 0  # the good rows remain usable
    assert rep["bad_rows"]["requests"] == {"duplicate_id": 1, "null_value": 2}
    assert rep["bad_rows"]["impressions"] == {
        "duplicate_impression": 1,
        "unknown_request": 1,
        "bad_position": 2,
        "wrong_type": 1,
    }
    assert rep["usable_rows"]["impressions"] == 6


def test_missing_column_makes_logs_unusable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req, imp = _good()
    code, rep = _report(_write(tmp_path, req, imp.drop(columns=["clicked"])), capsys)
    assert code == 1 and not rep["usable"]
    assert any("clicked" in f for f in rep["fatal"])
    assert rep["bad_rows"]["impressions"]["missing_column"] == 1


def test_wrong_types_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req, imp = _good()
    req["ts"] = ["2026-01-01T10:00:00Z", "not a time", "2026-01-02T09:00:00Z"]
    imp["position"] = ["1", "one", "1", "2", "1"]
    code, rep = _report(_write(tmp_path, req, imp), capsys)
    assert code == 0
    assert rep["bad_rows"]["requests"] == {"wrong_type": 1}
    # Request b's two impressions lose their request; "one" is no position.
    assert rep["bad_rows"]["impressions"] == {"wrong_type": 1, "unknown_request": 2}


def test_missing_table_and_empty_logs_are_unusable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req, imp = _good()
    (tmp_path / "only").mkdir()
    req.to_parquet(tmp_path / "only/requests.parquet")
    code, rep = _report(tmp_path / "only", capsys)
    assert code == 1 and any("impressions" in f for f in rep["fatal"])
    code, rep = _report(_write(tmp_path / "empty", req.head(0), imp.head(0)), capsys)
    assert code == 1 and rep["fatal"] == ["no usable request with impressions"]


def test_csv_logs_with_integer_ids_and_items_without_attributes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    req, imp = _good()
    req["request_id"] = [1, 2, 3]
    imp["request_id"] = [1, 1, 2, 2, 3]
    imp["clicked"] = imp["clicked"].astype(int)
    tmp_path.mkdir(exist_ok=True)
    req.to_csv(tmp_path / "requests.csv", index=False)
    imp.to_csv(tmp_path / "impressions.csv", index=False)
    pd.DataFrame({"item_id": ["x", "y", "z", "y"]}).to_csv(tmp_path / "items.csv", index=False)
    code, rep = _report(tmp_path, capsys)
    assert code == 0
    assert rep["usable_rows"] == {"requests": 3, "impressions": 5, "items": 3}
    assert rep["bad_rows"] == {"items": {"duplicate_id": 1}}
    assert any("no attribute columns" in n for n in rep["notes"])


def test_simulated_logs_are_clean(small_sim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, rep = _report(small_sim / "logs", capsys)
    n_requests = len(pd.read_parquet(small_sim / "logs" / "requests.parquet"))
    assert code == 0 and rep["bad_rows"] == {} and rep["usable_rows"]["requests"] == n_requests


def test_human_readable_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req, imp = _good()
    imp.loc[0, "position"] = -1
    assert main(["validate-logs", str(_write(tmp_path, req, imp))]) == 0
    out = capsys.readouterr().out
    assert "bad_position=1" in out and "usable: yes" in out


def test_not_a_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-logs", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
