"""Count method and dataset names written as string constants outside their own files.

Issue 28's measure of "one owner per concept": a method's name ("agw", "tsme", "mso",
"mscmnet", "glmn") belongs in ``stage2_fusion/methods/<name>.py`` and a dataset's ("sysu",
"regdb", "llcm", "demo", "pairs") in ``common/datasets/<name>.py``; every other string
constant equal to one of them is a place that compares or spells a name instead of asking
the spec. Counted with Python's ``ast`` over every ``*.py`` of the given packages: string
constants (f-string parts included) whose whole value is one of the names, docstrings not
counted. ``"demo"`` also names the demo *profile*; those uses are counted too (listed with -v).

Usage (from the repository root)::

    python benchmarks/stray_names.py            # totals
    python benchmarks/stray_names.py -v         # and every place
    python benchmarks/stray_names.py --root ../other-checkout
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

METHOD_NAMES = ("agw", "tsme", "mso", "mscmnet", "glmn")
DATASET_NAMES = ("sysu", "regdb", "llcm", "demo", "pairs")
PACKAGES = ("common", "stage1_dsgan", "stage2_fusion", "pipelines")


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def stray_names(root: Path, packages=PACKAGES) -> dict[str, list[str]]:
    """``{"method": [path:line:name, ...], "dataset": [...]}`` of the stray name strings under ``root``."""
    found: dict[str, list[str]] = {"method": [], "dataset": []}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text())
            docs = _docstrings(tree)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
                    continue
                if node.value in METHOD_NAMES and not rel.endswith(f"/methods/{node.value}.py"):
                    found["method"].append(f"{rel}:{node.lineno}:{node.value}")
                if node.value in DATASET_NAMES and not rel.endswith(f"/datasets/{node.value}.py"):
                    found["dataset"].append(f"{rel}:{node.lineno}:{node.value}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every place")
    args = parser.parse_args(argv)
    found = stray_names(args.root)
    for kind, places in found.items():
        print(f"{kind} name strings outside their own files: {len(places)}")
        if args.verbose:
            print("\n".join(f"  {p}" for p in places))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
