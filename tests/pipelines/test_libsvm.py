"""``import-libsvm``: real fixture slices against scikit-learn's reader, splits, bad lines, CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_svmlight_file

from ops.cli import libsvm_cmd
from pipelines.libsvm import choose_transforms, import_libsvm, parse_file
from pipelines.lists.io import read_split
from pipelines.lists.manifest import SPLITS, Manifest
from pipelines.lists.table import Lists

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "libsvm"
YAHOO, MSLR = FIXTURES / "yahoo", FIXTURES / "mslr"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _all(out: Path) -> dict[str, Lists]:
    return {s: read_split(out, s) for s in SPLITS}


def _check_against_sklearn(lists: Lists, path: Path, n_features: int) -> np.ndarray:
    """Features and labels equal scikit-learn's; return its qids (file order)."""
    x, y, qid = load_svmlight_file(str(path), n_features=n_features, query_id=True)
    np.testing.assert_array_equal(lists.num, x.toarray().astype(np.float32))
    np.testing.assert_array_equal(lists.labels, y.astype(np.int8))
    assert lists.labels.dtype == np.int8 and lists.num.dtype == np.float32
    assert lists.cat.shape == (len(y), 0)
    return np.asarray(qid)


def test_yahoo_fixture_through_group_files_matches_sklearn(tmp_path: Path) -> None:
    m = import_libsvm(YAHOO / "rank.train", YAHOO / "rank.test", tmp_path / "ds", valid_fraction=0)
    assert m.numeric_names == [f"f{i}" for i in range(1, 301)]
    assert {f.group for f in m.numeric} == {"libsvm"} and m.max_label == 4
    got = _all(tmp_path / "ds")
    assert len(got["valid"]) == 0
    for split, name in (("train", "rank.train"), ("test", "rank.test")):
        _check_against_sklearn(got[split], YAHOO / name, 300)
        sizes = [int(s) for s in (YAHOO / f"{name}.query").read_text().split()]
        np.testing.assert_array_equal(got[split].list_lengths(), sizes)
        assert list(got[split].request_id) == [f"{split}:{n}" for n in range(1, len(sizes) + 1)]
    assert m.source["grouping"]["train"].endswith("rank.train.query")


def test_mslr_fixture_through_qid_matches_sklearn(tmp_path: Path) -> None:
    m = import_libsvm(MSLR / "train.txt", MSLR / "test.txt", tmp_path / "ds", valid_fraction=0)
    assert len(m.numeric) == 136 and m.max_label == 3
    # Counts and BM25-like scores run into the hundreds: heavy-tailed, so slog1p.
    assert {f.transform for f in m.numeric} == {"slog1p", "none"}
    for split, name in (("train", "train.txt"), ("test", "test.txt")):
        lists = read_split(tmp_path / "ds", split)
        qid = _check_against_sklearn(lists, MSLR / name, 136)
        starts = np.flatnonzero(np.r_[True, qid[1:] != qid[:-1]])
        np.testing.assert_array_equal(lists.list_lengths(), np.diff(np.r_[starts, len(qid)]))
        assert list(lists.request_id) == [f"{split}:{q}" for q in qid[starts]]
        assert lists.item_ids[0] == "1"  # line numbers in the source file


def test_output_directory_is_complete_and_reads_back(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    m = import_libsvm(MSLR / "train.txt", MSLR / "test.txt", out, seed=3)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test.parquet",
        "train.parquet",
        "valid.parquet",
    ]
    loaded = Manifest.load(out)
    assert loaded.to_dict() == m.to_dict()
    assert loaded.source["kind"] == "libsvm" and loaded.source["seed"] == 3
    assert loaded.source["train"] == str(MSLR / "train.txt") and loaded.source["valid"] is None
    assert loaded.labels == {"graded": "0-3 relevance from the file"}
    assert loaded.bad_rows == {"libsvm": {}} and loaded.columns == []
    assert loaded.config["slog1p_max_abs"] == 10.0
    assert loaded.splits["test"] == {"requests": 2, "items": 232}
    test = read_split(out, "test")
    assert test.ts is None and test.user_id is None and test.positions is None
    # Statistics are those of the transformed train values.
    f = loaded.numeric[10]
    train = read_split(out, "train").num[:, 10]
    x = np.sign(train) * np.log1p(np.abs(train)) if f.transform == "slog1p" else train
    assert f.mean == pytest.approx(float(x.mean()), rel=1e-4)


def test_valid_fraction_holds_out_whole_queries_by_seed(tmp_path: Path) -> None:
    def valid_ids(seed: int, name: str) -> list[str]:
        out = tmp_path / name
        import_libsvm(YAHOO / "rank.train", YAHOO / "rank.test", out, seed=seed)
        got = _all(out)
        train_q = {r.split(":")[1] for r in got["train"].request_id}
        valid_q = [r.split(":")[1] for r in got["valid"].request_id]
        assert not train_q & set(valid_q) and len(train_q | set(valid_q)) == 20
        assert len(valid_q) == 4  # 20% of 20 queries
        assert valid_q == sorted(valid_q, key=int)  # file order kept
        sizes = [int(s) for s in (YAHOO / "rank.train.query").read_text().split()]
        np.testing.assert_array_equal(
            got["valid"].list_lengths(), [sizes[int(q) - 1] for q in valid_q]
        )  # whole queries
        return list(got["valid"].request_id)

    first = valid_ids(1, "a")
    assert valid_ids(1, "b") == first
    assert valid_ids(2, "c") != first


def test_valid_file_is_the_valid_split(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    m = import_libsvm(MSLR / "train.txt", MSLR / "test.txt", out, valid=MSLR / "test.txt")
    assert m.source["valid"] == str(MSLR / "test.txt") and m.source["valid_fraction"] is None
    got = _all(out)
    assert len(got["train"]) == 2
    assert list(got["valid"].request_id) == ["valid:13", "valid:28"]
    np.testing.assert_array_equal(got["valid"].num, got["test"].num)


def test_dense_and_sparse_files_give_the_same_lists(tmp_path: Path) -> None:
    dense = _write(
        tmp_path / "dense.txt",
        "2 qid:7 1:0.5 2:0 3:3\n0 qid:7 1:0 2:0 3:0\n1 qid:9 1:1.5 2:-2 3:0 # a doc\n",
    )
    sparse = _write(tmp_path / "sparse.txt", "2 qid:7 1:.5 3:3\n0 qid:7\n1 qid:9 2:-2 1:1.5\n")
    import_libsvm(dense, dense, tmp_path / "a", valid_fraction=0)
    import_libsvm(sparse, sparse, tmp_path / "b", valid_fraction=0)
    d, s = read_split(tmp_path / "a", "train"), read_split(tmp_path / "b", "train")
    np.testing.assert_array_equal(d.num, s.num)
    np.testing.assert_array_equal(d.num, [[0.5, 0, 3], [0, 0, 0], [1.5, -2, 0]])
    np.testing.assert_array_equal(d.offsets, s.offsets)
    assert list(d.request_id) == list(s.request_id) == ["train:7", "train:9"]


def test_bad_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    lines = [
        "1 qid:1 1:1 2:2",  # good
        "x qid:1 1:1",  # bad_label
        "-1 qid:1 1:1",  # bad_label
        "1.5 qid:1 1:1",  # bad_label
        "2 qid: 1:1",  # bad_qid (empty)
        "2 1:1",  # bad_qid (none in a file that uses them)
        "2 qid:1 1:a",  # bad_feature
        "2 qid:1 1:2:3 4",  # bad_feature
        "2 qid:1 1: 2:1",  # bad_feature
        "2 qid:1 2:1 2:3",  # bad_feature (repeated index)
        "2 qid:1 -3:1",  # bad_feature
        "2 qid:1 1:nan",  # bad_value
        "3 qid:1 1:1e40",  # bad_value (beyond float32)
        "",  # blank: not data
        "# a comment line: not data",
        "3.0 qid:2 2:5",  # good, one document
    ]
    path = _write(tmp_path / "broken.txt", "\n".join(lines) + "\n")
    pf = parse_file(path)
    assert dict(pf.bad) == {"bad_label": 3, "bad_qid": 2, "bad_feature": 5, "bad_value": 2}
    m = import_libsvm(path, path, tmp_path / "ds", valid_fraction=0)
    assert m.bad_rows == {
        "libsvm": {"bad_label": 6, "bad_qid": 4, "bad_feature": 10, "bad_value": 4}
    }
    train = read_split(tmp_path / "ds", "train")
    assert list(train.request_id) == ["train:1", "train:2"]
    np.testing.assert_array_equal(train.labels, [1, 3])
    np.testing.assert_array_equal(train.num, [[1, 2], [0, 5]])
    np.testing.assert_array_equal(train.item_ids, ["1", "16"])


def test_zero_based_indices_keep_f0_and_reappearing_qids_merge(tmp_path: Path) -> None:
    path = _write(tmp_path / "z.txt", "1 qid:5 0:1 2:2\n0 qid:6 1:1\n2 qid:5 0:3\n")
    m = import_libsvm(path, path, tmp_path / "ds", valid_fraction=0)
    assert m.numeric_names == ["f0", "f1", "f2"] and m.config["zero_based"]
    assert m.source["merged_qids"]["train"] == 1
    train = read_split(tmp_path / "ds", "train")
    assert list(train.request_id) == ["train:5", "train:6"]
    np.testing.assert_array_equal(train.list_lengths(), [2, 1])
    np.testing.assert_array_equal(train.num, [[1, 0, 2], [3, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(train.labels, [1, 2, 0])


def test_missing_group_file_and_bad_group_sizes_are_clear_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "nogroups.txt", "1 1:1\n0 1:2\n2 1:3\n")
    empty = _write(tmp_path / "empty.txt", "")
    with pytest.raises(ValueError, match=r"nogroups\.txt: no qid.*nogroups\.txt\.query"):
        import_libsvm(path, empty, tmp_path / "ds")
    _write(tmp_path / "nogroups.txt.query", "2\n2\n")
    with pytest.raises(ValueError, match=r"sum to 4 but .*nogroups\.txt has 3 data lines"):
        import_libsvm(path, empty, tmp_path / "ds")
    _write(tmp_path / "nogroups.txt.query", "2\none\n")
    with pytest.raises(ValueError, match=r"nogroups\.txt\.query:2"):
        import_libsvm(path, empty, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        import_libsvm(tmp_path / "missing.txt", empty, tmp_path / "ds")
    with pytest.raises(ValueError, match="valid_fraction"):
        import_libsvm(path, empty, tmp_path / "ds", valid_fraction=1.0)


def test_empty_test_file_gives_an_empty_split(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.txt", "")
    m = import_libsvm(YAHOO / "rank.train", empty, tmp_path / "ds")
    assert m.splits["test"] == {"requests": 0, "items": 0}
    test = read_split(tmp_path / "ds", "test")
    assert len(test) == 0 and test.num.shape == (0, 300)


def test_transform_rule() -> None:
    rng = np.random.default_rng(0)
    num = np.stack(
        [
            rng.uniform(0, 1, 1000),  # bounded: none
            rng.exponential(50, 1000),  # max far above 10: slog1p
            np.r_[np.zeros(900), rng.uniform(4, 9, 100)],  # rare large values: slog1p
            rng.normal(0, 2, 1000).clip(-9, 9),  # symmetric, within 10: none
        ],
        axis=1,
    )
    assert choose_transforms(num) == ["none", "slog1p", "slog1p", "none"]
    assert choose_transforms(np.zeros((0, 2), np.float32)) == ["none", "none"]


def test_cli_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    libsvm_cmd.add_parsers(parser.add_subparsers())
    broken = _write(tmp_path / "test.txt", "1 qid:1 1:1\nx qid:1 1:1\n")
    args = parser.parse_args(
        [
            "import-libsvm",
            "--train",
            str(MSLR / "train.txt"),
            "--test",
            str(broken),
            "--out",
            str(tmp_path / "ds"),
            "--valid-fraction",
            "0.5",
            "--seed",
            "4",
        ]
    )
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "136 features f1..f136" in out and "labels 0-3" in out
    assert "train        1 queries" in out and "valid        1 queries" in out
    assert "test         1 queries          1 documents" in out
    assert "bad lines (skipped): bad_label 1" in out
    with pytest.raises(SystemExit):  # --valid and --valid-fraction exclude each other
        parser.parse_args(
            [
                "import-libsvm",
                "--train",
                "a",
                "--test",
                "b",
                "--out",
                "c",
                "--valid",
                "v",
                "--valid-fraction",
                "0.1",
            ]
        )
