"""Static checks as tests: ruff, the package layers (import-linter) and imports that work on
their own. A failure here fails the suite like any other regression."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("eventstore", "projections", "agents", "replay", "swf")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the test extra (pip install -e '.[test]')")
    return path


def test_ruff_is_clean() -> None:
    result = subprocess.run([_tool("ruff"), "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_layers_and_no_cycles() -> None:
    """eventstore <- projections <- agents <- replay <- swf, and no cycle inside a package
    (the contracts are in pyproject.toml)."""
    result = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    """Type checks over the five packages (configuration in pyproject.toml)."""
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts or parts[-1] == "__main__":
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_on_its_own() -> None:
    """Each module in a fresh interpreter: an import cycle that only works in one import order
    shows up here."""
    modules = _modules()
    assert len(modules) > 50  # the walk found the packages
    running = [(name, subprocess.Popen([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True))
               for name in modules]
    failed = []
    for name, process in running:
        _out, err = process.communicate(timeout=120)
        if process.returncode:
            failed.append(f"{name}: {(err.strip().splitlines() or ['?'])[-1]}")
    assert not failed, "\n".join(failed)
