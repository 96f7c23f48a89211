"""The package layout CONTRIBUTING.md describes: every module imports on its own (no import
cycle that only a lucky import order hides), and the layers import only downwards
(common imports neither stage, the two stages never import each other)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "stage1_dsgan", "stage2_fusion", "pipelines")


def _modules() -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_every_module_imports_first():
    """Each module is imported as the first project module of a clean slate (the project's
    modules are dropped from ``sys.modules`` before each), in one interpreter."""
    script = (
        "import importlib, sys\n"
        f"packages = {PACKAGES!r}\n"
        f"for name in {_modules()!r}:\n"
        "    for key in [k for k in sys.modules if k.split('.')[0] in packages]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {type(exc).__name__}: {exc}')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "", proc.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_layers_import_only_downwards():
    forbidden = {"common": {"stage1_dsgan", "stage2_fusion", "pipelines"}, "stage1_dsgan": {"stage2_fusion", "pipelines"},
                 "stage2_fusion": {"stage1_dsgan", "pipelines"}}
    wrong = [f"{path.relative_to(ROOT)} imports {sorted(_imports(path) & bad)}"
             for package, bad in forbidden.items() for path in sorted((ROOT / package).rglob("*.py")) if _imports(path) & bad]
    assert not wrong, wrong


def test_the_repository_tracks_no_symbolic_links():
    """A committed link (a developer's data/ -> elsewhere) breaks every fresh clone: run-all
    cannot make data/demo-v3 under a dangling link."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=root, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000 ")]
    assert links == [], f"tracked symbolic links: {links}"
