"""An interrupted `ranker features` never leaves a half dataset, and the next run removes
what the dead one left behind (its scratch files once stayed: 14 entries, 788 MB)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.io import remove_dead_scratch, scratch_prefix
from pipelines.lists.io import read_split


def _features(logs: Path, out: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "ops.cli", "features", "--logs", str(logs), "--out", str(out)]
    cmd += ["--config", "sim", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_killed_runs_leave_no_half_dataset_and_the_next_run_cleans_up(
    small_sim: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lists"
    kills = 0
    # Killed at three points: while partitioning, while writing, while saving the state.
    for wait_for in ("features-scratch", "lists", "lists"):
        proc = _features(small_sim / "logs", out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(n.startswith(f".{wait_for}.") for n in _hidden(tmp_path)):
                break
            time.sleep(0.01)
        if wait_for == "lists" and kills == 2:
            time.sleep(0.5)  # later in the same run
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        assert not out.exists() or (out / "manifest.json").exists()  # nothing half done
    assert kills >= 2
    left = _hidden(tmp_path)
    assert left, "the kills left no scratch behind: the test killed too late"
    proc = _features(small_sim / "logs", out)
    assert proc.wait(timeout=300) == 0
    assert _hidden(tmp_path) == []  # the dead runs' scratch is gone, and this run's own
    assert len(read_split(out, "train")) > 0


def test_scratch_of_live_processes_and_other_hosts_is_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / f"{scratch_prefix('x')}abc.tmp"  # this process: alive
    mine.mkdir()
    dead = tmp_path / f"{scratch_prefix('y')}def.tmp".replace(f"pid{os.getpid()}", "pid999999999")
    dead.write_text("left by a dead run")
    other = tmp_path / ".z.some-other-host.pid1.ghi.tmp"
    other.write_text("another machine's")
    plain = tmp_path / ".keep-me"
    plain.write_text("not ours")
    assert remove_dead_scratch(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name, plain.name])
