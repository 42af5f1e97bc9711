"""The layering rule, read from the source: ``wire/`` and ``core/`` are sans-IO, ``wire/`` stands
below ``core/``, and nothing below the shell reaches into it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pyslirp4netns"
# What would let a module do I/O, read a clock or draw randomness: the shell's business.
FORBIDDEN = {
    "os",
    "select",
    "time",
    "random",
    "threading",
    "signal",
    "fcntl",
    "ctypes",
    "pytun",
    "pyroute2",
    "pyslirp4netns.shell",
}
BELOW_CORE = FORBIDDEN | {"pyslirp4netns.core"}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (a function-local import counts too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def offending(path: Path, banned: set[str]) -> list[str]:
    return sorted(
        name for name in imports(path) if any(name == b or name.startswith(b + ".") for b in banned)
    )


def modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).glob("*.py"))


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: f"core/{p.name}")
def test_core_modules_do_no_io(path: Path) -> None:
    assert offending(path, FORBIDDEN) == []


@pytest.mark.parametrize("path", modules("wire"), ids=lambda p: f"wire/{p.name}")
def test_wire_modules_do_no_io_and_never_import_the_core(path: Path) -> None:
    assert offending(path, BELOW_CORE) == []


def test_the_layers_are_where_the_rule_looks() -> None:
    assert len(modules("core")) >= 10 and len(modules("wire")) >= 10


def test_the_rule_catches_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os.path\nfrom time import monotonic\nfrom pyslirp4netns.shell import reactor\n"
        "def f():\n    import random\n"
        "from pyslirp4netns.core import stack\nfrom . import sibling\n"
    )
    assert offending(sample, FORBIDDEN) == [
        "os.path",
        "pyslirp4netns.shell",
        "pyslirp4netns.shell.reactor",
        "random",
        "time",
        "time.monotonic",
    ]
    assert "pyslirp4netns.core" in offending(sample, BELOW_CORE)
