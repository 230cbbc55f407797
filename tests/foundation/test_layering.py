"""Stages import downwards only (DESIGN.md, Layering): a module may import from its own package or from a package of
a lower rank, never from a stage above it or beside it. What two stages share belongs in the lower one."""

from __future__ import annotations

import ast
from pathlib import Path

import medtl

RANK = {
    # foundations every stage may use: first what they themselves need
    **dict.fromkeys(("errors", "hashing", "timing", "ranking"), 0),
    **dict.fromkeys(("progress", "registry", "identity", "outputs", "contracts"), 1),
    "io": 2, "artifacts": 2, "reporting": 2,
    "sources": 3, "datasets": 3, "cards": 3,
    "ingest": 4, "models": 4,
    "training": 5,
    "pretraining": 6, "planning": 6,
    "evaluation": 7,
    "scoring": 8,
    "monitoring": 9,
    "cli": 10, "demo": 10,
}  # fmt: skip
ROOT = Path(medtl.__file__).parent


def _package(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medtl."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("medtl."))
    return found


def test_every_package_has_a_rank():
    packages = {_package(path) for path in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert packages <= set(RANK), f"give these a rank in the layering: {sorted(packages - set(RANK))}"


def test_stages_import_downwards_only():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        own = _package(path)
        if own not in RANK:
            continue
        for imported in _imported_packages(path) - {own}:
            if imported in RANK and RANK[imported] >= RANK[own]:
                upward.append(f"{path.relative_to(ROOT.parent)} imports medtl.{imported}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("def f():\n    from medtl.scoring.score import score\n", encoding="utf-8")
    assert _imported_packages(module) == {"scoring"} and RANK["scoring"] > RANK["training"]
