"""The ``ranker`` command line: help, simulate, and clear errors on bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.cli import main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("simulate", "validate-logs", "demo"):
        assert cmd in out


def test_commands_parse_without_the_heavy_libraries() -> None:
    """What the package docstring promises: the parser (every command's flags, the kinds'
    settings included) imports neither torch nor LightGBM, ONNX Runtime or Ray, which cost
    the serving and data commands about a second a start. One fresh interpreter runs each
    command's --help in turn and lists what is loaded after each: the first command with a
    heavy library is the one that imported it."""
    heavy = ("torch", "lightgbm", "onnxruntime", "ray")
    commands = [[], ["serve"], ["features"], ["train"]]
    code = (
        "import json, sys\n"
        "from ops.cli import main\n"
        "loaded = {}\n"
        f"for command in {commands!r}:\n"
        "    try:\n"
        "        main([*command, '--help'])\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (command, e.code)\n"
        f"    loaded[' '.join(command) or '--help'] = [m for m in {heavy!r} if m in sys.modules]\n"
        "print(json.dumps(loaded))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded == {"--help": [], "serve": [], "features": [], "train": []}


def test_simulate_writes_logs_world_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "simulate",
            "--out",
            str(tmp_path),
            "--requests",
            "200",
            "--users",
            "30",
            "--items",
            "150",
            "--days",
            "2",
            "--seed",
            "5",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["requests"] == 200 and summary["items"] == 150
    assert (
        10
        <= summary["candidates_per_request"]["min"]
        <= summary["candidates_per_request"]["max"]
        <= 100
    )
    assert (tmp_path / "world/truth.parquet").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # no leftovers of the atomic writes


def test_bad_simulate_arguments_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["simulate", "--out", str(tmp_path), "--requests", "10", "--random-share", "2"])
    assert code == 2
    assert "random_share" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()
