"""The layout holds: imports flow one way, and wechatpy stays inside the platform packages.

The layers are checked by import-linter (its contract is in pyproject.toml); which modules may
import wechatpy is read from the source here, so that the rule cannot drift back unnoticed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "storage", "scheduler")
# Where the platforms live (each its own package, plus what the WeChat ones share); nothing
# else may see a wechatpy class.
WECHATPY_HOMES = (ROOT / "bot" / "platforms",)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_imports_flow_one_way() -> None:
    """bot -> scheduler -> handlers -> storage, checked by import-linter with pyproject's contract."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wechatpy_is_imported_only_by_the_platform_packages() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if any(home in path.parents for home in WECHATPY_HOMES):
                continue
            if any(name == "wechatpy" or name.startswith("wechatpy.") for name in _imports(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_the_check_sees_an_import() -> None:
    """The reader above finds both import forms (a check that cannot fail is no check)."""
    sample = ROOT / "bot" / "platforms" / "official_account" / "webhook.py"
    assert {"wechatpy", "wechatpy.crypto"} & _imports(sample)
