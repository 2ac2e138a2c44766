"""Imports run one way: pipelines <- ranker <- serving <- ops.

Every import statement of every module is read (top-level and inside functions alike, since
a lazy import is still a dependency); a module may import its own layer and those below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["pipelines", "ranker", "serving", "ops"]  # each may import only what comes before


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_imports_run_one_way() -> None:
    wrong = []
    for rank, layer in enumerate(LAYERS):
        above = set(LAYERS[rank + 1 :])
        files = sorted((REPO / layer).rglob("*.py"))
        assert files, f"no modules under {layer}/"
        for path in files:
            for line, module in _imports(path):
                if module.split(".")[0] in above:
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from serving.app import create_app\n")
    assert (2, "serving.app") in _imports(bad)
