"""The HTML reports render their plots in a real browser (headless Chromium) with no console
error. Skips with a reason where no Chromium is installed (.ci/run installs Debian's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.cli import main

CHROMIUM = next(
    (c for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)"
)


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """(DOM after load, console messages) of a local page in headless Chromium."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return r.stdout, console


def plots(dom: str) -> tuple[int, int]:
    found = re.search(r'data-plots="(\d+)"', dom)
    drawn = re.search(r'data-plots-rendered="(\d+)"', dom)
    return (int(found.group(1)) if found else -1, int(drawn.group(1)) if drawn else -1)


def test_a_planted_console_error_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text(
        "<html><body><script>console.error('planted'); missing();</script></body></html>"
    )
    _, console = render(page, tmp_path / "profile")
    assert any("planted" in line for line in console) and any("missing" in line for line in console)


def test_offline_report_renders_its_plots_without_console_errors(
    small_lists: Path, small_registry: Path, tmp_path: Path
) -> None:
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(small_lists),
                "--models",
                str(small_registry / "lgbm"),
                str(small_registry / "transformer"),
                "--out",
                str(tmp_path / "r"),
                "--bootstrap",
                "100",
            ]
        )
        == 0
    )
    dom, console = render(tmp_path / "r" / "report.html", tmp_path / "profile")
    assert console == []
    total, drawn = plots(dom)
    assert total >= 3 and drawn == total  # metric bars, the NDCG@k sweep, a difference histogram
    assert "Segments (exploratory" in dom and "Verdict" in dom
