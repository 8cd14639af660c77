"""The cases, reference data and mesh scripts shipped with femplast, and ``femplast examples``.

A wheel carries them as package data under ``femplast/examples/`` (copied there at build time
by ``setup.py``); a source checkout (editable install) has them at the repository root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from femplast.errors import FemplastInputError

SHIPPED = ("cases", "reference", "meshes")
"""Folders shipped, with their relative paths kept (cases name ``../reference/...``)."""


def examples_root() -> Path:
    """The folder holding ``cases/``, ``reference/`` and ``meshes/``: the wheel's package data,
    else the source tree's root."""
    pkg = Path(__file__).resolve().parents[1]  # .../femplast
    data = pkg / "examples"
    return data if (data / "cases").is_dir() else pkg.parent


def shipped_case(name: str) -> Path:
    """The path of a shipped case, e.g. ``shipped_case("quickstart.yaml")``."""
    return examples_root() / "cases" / name


def copy_examples(target: str | Path) -> list[Path]:
    """Copy the shipped folders into ``target`` (new or empty); returns the files written."""
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FemplastInputError("DIR", str(target), "a new or empty directory (files are "
                                 "never overwritten)")
    root = examples_root()
    if not (root / "cases").is_dir():
        raise FemplastInputError("examples", str(root), "an installation with its cases "
                                 "(reinstall femplast)")
    out = []
    for sub in SHIPPED:
        src = root / sub
        if not src.is_dir():
            continue
        for f in sorted(src.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                dst = target / sub / f.relative_to(src)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dst)
                out.append(dst)
    return out
