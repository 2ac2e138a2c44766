"""An independent OpenAPI fuzzer (schemathesis, every check) against a real `ranker serve`
with two workers: no 5xx, schema-valid requests accepted, invalid ones refused, responses as
documented. Bounded examples and a fixed seed; a failure prints schemathesis' report with a
curl command that reproduces it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ops.online.server_proc import background_server

HERE = Path(__file__).parent
EXAMPLES = 40
SEED = 20261204


def test_the_openapi_schema_says_what_the_server_does(
    small_registry: Path, small_lists: Path, tmp_path: Path
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.fail("schemathesis is a test dependency: pip install -e '.[test]'")
    with background_server(
        small_registry, small_lists / "state", tmp_path / "logs", workers=2
    ) as s:
        env = {
            **os.environ,
            "RANKER_CLIENT_TOKEN": s.client_token,
            "RANKER_ADMIN_TOKEN": s.admin_token,
            "PYTHONPATH": str(HERE),  # the hooks module
        }
        run = subprocess.run(
            [
                st,
                "--config-file",
                str(HERE / "schemathesis.toml"),
                "run",
                f"{s.url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                str(SEED),
                "--generation-database",
                "none",
                "--no-color",
                "--report-dir",
                str(tmp_path / "report"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = [line for line in run.stdout.splitlines() if " generated, " in line]
    assert summary and "passed" in summary[-1], run.stdout[-3000:]
    generated = int(summary[-1].split()[0])
    assert generated >= 300, summary  # every operation was exercised, not skipped
