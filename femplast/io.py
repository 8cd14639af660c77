"""Outputs: output directories, per-realization HDF5, XDMF field snapshots, summary.json.

Every file is written under a temporary name and renamed when complete, so a partial file never
looks complete; ``summary.json`` is written last and marks a finished run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from femplast import FemplastInputError


def choose_outdir(out: str | None, name: str, base: str | Path = "runs") -> Path:
    """The output directory: ``out`` if given (must not exist or be empty), else a fresh
    ``runs/<name>``, ``runs/<name>-2``, ... (never an existing one)."""
    if out is not None:
        p = Path(out)
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise FemplastInputError("--out", str(p), "a new or empty directory (existing "
                                     "results are never overwritten; use --resume to continue "
                                     "an interrupted run)")
        return p
    base = Path(base)
    p = base / name
    i = 2
    while p.exists():
        p = base / f"{name}-{i}"
        i += 1
    return p


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


class H5Writer:
    """Write an HDF5 file under ``name.tmp`` and rename it on close."""

    def __init__(self, path: Path):
        import h5py

        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.f = h5py.File(self.tmp, "w")

    def __enter__(self):
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_group(f, name: str, data: dict, attrs: dict | None = None):
    g = f.require_group(name)
    for k, v in data.items():
        if v is None:
            continue
        # no compression: the HDF5 shared with dolfinx is built without the gzip filter
        g.create_dataset(k, data=np.asarray(v))
    for k, v in (attrs or {}).items():
        g.attrs[k] = v
    return g


class FieldWriter:
    """Time series of named cell fields (DG0) in XDMF, opened directly by ParaView.

    Scalar fields are written one component at a time (XDMF stores 2x2 tensors in the wrong
    slots, see the dolfinx notes). Written in ``<dir>/.partial`` and moved on :meth:`close`.
    """

    def __init__(self, path: Path, elasticity):
        from dolfinx import fem, io

        self.final = Path(path)
        self.partial_dir = self.final.parent / ".partial"
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.partial_dir / self.final.name
        self.el = elasticity
        comm = elasticity.box.mesh.comm
        self.xdmf = io.XDMFFile(comm, str(self.tmp), "w")
        self.xdmf.write_mesh(elasticity.box.mesh)
        self._blk = elasticity.W.dofmap.list[elasticity._dolfinx_cells, 0]
        self._funcs: dict[str, object] = {}
        self._fem = fem
        self.times: list[float] = []

    def write(self, t: float, fields: dict[str, np.ndarray]):
        """Write cell fields (global canonical order, one value per cell) at time ``t``."""
        el = self.el
        for name, values in fields.items():
            f = self._funcs.get(name)
            if f is None:
                f = self._funcs[name] = self._fem.Function(el.W, name=name)
            f.x.array[self._blk] = np.asarray(values, float)[el.cells]
            f.x.scatter_forward()
            self.xdmf.write_function(f, float(t))
        self.times.append(float(t))

    def close(self):
        self.xdmf.close()
        h5 = self.tmp.with_suffix(".h5")
        os.replace(h5, self.final.with_suffix(".h5"))
        os.replace(self.tmp, self.final)
        try:
            self.partial_dir.rmdir()
        except OSError:
            pass


def stress_fields(prefix: str, sig_xyz: np.ndarray) -> dict[str, np.ndarray]:
    """Named scalar fields of a stress tensor per cell, plus von Mises and pressure."""
    xx, yy, xy = sig_xyz[:, 0], sig_xyz[:, 1], sig_xyz[:, 2]
    return {f"{prefix}_xx": xx, f"{prefix}_yy": yy, f"{prefix}_xy": xy,
            f"{prefix}_vm": np.sqrt(0.25 * (xx - yy) ** 2 + xy**2),
            "pressure" if prefix == "sigma" else f"{prefix}_p": -0.5 * (xx + yy)}


class Progress:
    """Terminal progress for long runs (stderr); silent when quiet."""

    def __init__(self, quiet: bool = False, every: float = 2.0):
        self.quiet, self.every = quiet, every
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, msg: str, force: bool = False):
        if self.quiet:
            return
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            cols = shutil.get_terminal_size((100, 20)).columns
            print(f"[femplast {now - self.t0:7.1f}s] {msg}"[:cols], flush=True,
                  file=__import__("sys").stderr)
