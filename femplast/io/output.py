"""Outputs: output directories, per-realization HDF5, XDMF field snapshots, summary.json.

Every file is written under a temporary name and renamed when complete, so a partial file never
looks complete; ``summary.json`` is written last and marks a finished run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` under ``path.tmp``, flush it to disk and rename it to ``path``.

    On any failure (a full disk: ENOSPC) the partial file is removed and the OSError names
    ``path``: the run can continue with ``--resume`` once there is space, and no file looks
    complete that is not."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None or Path(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


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
    """Write an HDF5 file: built in memory, then written under ``name.tmp`` and renamed
    (:func:`atomic_write_bytes`). HDF5 itself never meets a full disk (its library aborts
    the process when it cannot flush its cache at close); a failed write is an OSError
    naming the file."""

    def __init__(self, path: Path):
        import io

        import h5py

        self.path = Path(path)
        self.buf = io.BytesIO()
        self.f = h5py.File(self.buf, "w")

    def __enter__(self):
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            atomic_write_bytes(self.path, self.buf.getvalue())
        self.buf = None


# Units of every dataset femplast writes (attribute ``units`` of each HDF5 dataset), in the
# Lennard-Jones units of the atomistic reference (docs/case-reference.md): stresses in
# epsilon_SL / sigma_SL^2, lengths in sigma_SL; "1": dimensionless (strains, ratios, flags);
# "count": a number of events / steps / items; "index": a cell, step or event index.
STRESS_UNIT = "epsilon_SL/sigma_SL^2"
LENGTH_UNIT = "sigma_SL"
_UNIT_NAMES = {
    STRESS_UNIT: (
        "stress", "stress_before", "stress_after", "drop_xy", "sigma0", "tau_c", "tau_i",
        "tau_f", "dtau_c", "delta_tau_c", "von_mises", "sigma_c", "sigma_f", "sigma_i",
        "internal_stress_std", "mean_threshold", "window_mean_tau_c", "window_stress_std",
        "sample_mean_tau_c", "sample_stress_std", "sigma_xx", "sigma_yy", "sigma_xy",
        "sigma_vm", "pressure", "dtau_c_min", "tau_c_min", "tau_c_mean", "x", "sigma0_xy", "G",
        "B", "increment_xy", "tau", "self_response", "box_stress"),
    LENGTH_UNIT: ("centre", "points", "L"),
    "1": ("gamma_ext", "eps_pl", "eps_pl_mean", "eps_pl_xx", "eps_pl_yy", "eps_pl_xy",
          "plastic_strain_variance", "gamma_c", "LOC", "LOC_plastic", "complete", "d_gamma",
          "E_macro", "total_strain_variance"),
    "rad": ("theta",),
    "deg": ("alpha", "alpha_ext"),
    "count": ("n_events", "size", "relaxation_steps", "window_event", "sample_event"),
    "index": ("step", "cell", "cells", "trigger_cell", "system", "realization",
              "relaxation_step"),
}
DATASET_UNITS = {n: u for u, names in _UNIT_NAMES.items() for n in names}


def dataset_units(name: str) -> str:
    """The unit of a dataset by its name (:data:`DATASET_UNITS`); ``"unknown"`` for a name
    not listed (tests/test_output.py fails on it for the datasets of real runs)."""
    return DATASET_UNITS.get(name, "unknown")


def write_group(f, name: str, data: dict, attrs: dict | None = None):
    g = f.require_group(name)
    for k, v in data.items():
        if v is None:
            continue
        # no compression: the HDF5 shared with dolfinx is built without the gzip filter
        g.create_dataset(k, data=np.asarray(v)).attrs["units"] = dataset_units(k)
    for k, v in (attrs or {}).items():
        g.attrs[k] = v
    return g


def cell_mesh(box) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Points and cells of a box mesh with cells in global canonical order (collective)."""
    msh = box.mesh
    comm = msh.comm
    n_own = box.num_owned
    x = msh.geometry.x[:, :2]
    conn = msh.geometry.dofmaps[0][:n_own]
    used = np.unique(conn)
    local_pts = x[used]
    local_conn = np.searchsorted(used, conn)
    pts = comm.allgather(local_pts)
    conns = comm.allgather(local_conn)
    canon = comm.allgather(box.canonical)
    offs = np.cumsum([0] + [len(p) for p in pts])
    points = np.vstack(pts)
    cells = np.empty((box.num_cells, conn.shape[1]), np.int64)
    for c, o, k in zip(conns, offs, canon, strict=False):
        cells[k] = c + o
    if conn.shape[1] == 4:
        cells = cells[:, [0, 1, 3, 2]]  # dolfinx tensor-product order -> VTK counter-clockwise
        return points, [("quad", cells)]
    return points, [("triangle", cells)]


class _SeriesWriter:
    """meshio's XDMF time-series writer with its HDF5 file built in memory (written with the
    XML on close; meshio 5.3 would open ``<stem>.h5`` in the current directory)."""

    def __new__(cls, path: Path):
        from meshio.xdmf import TimeSeriesWriter

        class Writer(TimeSeriesWriter):
            def __enter__(self):
                import io

                import h5py

                self.h5_filename = str(self.filename.with_suffix(".h5"))  # the XML's name
                self.buf = io.BytesIO()
                self.h5_file = h5py.File(self.buf, "w")
                return self

        w = Writer(path)
        w.collection.set("Name", "fields")  # pyvista: reader.read()["fields"]
        return w


class FieldWriter:
    """Time series of named cell fields in XDMF 3 written by meshio's ``TimeSeriesWriter``
    (one mesh grid, one temporal collection whose grids hold every field), read back by
    ParaView, pyvista, meshio (``meshio.xdmf.TimeSeriesReader``) and dolfinx
    (``XDMFFile.read_mesh(name="mesh")``).

    Why not dolfinx's own writers: ``XDMFFile.write_function`` writes one temporal collection
    per field under an ``https`` XInclude namespace (VTK's XDMF reader, hence pyvista, crashes
    on it; meshio reads one field of it), and ``VTXWriter``'s ADIOS2 files are read neither by
    meshio nor by pyvista's VTK wheels. The mesh is written once, cells in global canonical
    order (fields are given in that order); heavy data in ``<name>.h5``. Both files are
    built in memory and written atomically on close, the XML last (HDF5 never meets a full
    disk, which makes its library abort the process; an interrupted run leaves no
    complete-looking file). Rank 0 writes.
    """

    def __init__(self, path: Path, box):
        self.final = Path(path)
        self.comm = box.mesh.comm
        self.points, cells = cell_mesh(box)
        self.cell_type, self.cells = cells[0]
        self.steps: list[tuple[float, list[str]]] = []
        self.writer = None
        if self.comm.rank == 0:
            self.writer = _SeriesWriter(self.final).__enter__()
            self.writer.write_points_cells(self.points, cells)
            self._label(0, ["points", "cells"])

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.steps]

    def write(self, t: float, fields: dict[str, np.ndarray]):
        """Write cell fields (global canonical order, one value per cell) at time ``t``."""
        if self.writer is not None:
            first = self.writer.data_counter
            self.writer.write_data(float(t), cell_data={
                k: [np.asarray(v, dtype=float)] for k, v in fields.items()})
            self._label(first, list(fields))
        self.steps.append((float(t), list(fields)))

    def _label(self, first: int, names: list[str]) -> None:
        # meshio names datasets data0, data1, ... in the order written: give each its field
        # name and unit (attributes; the XDMF names the fields for readers)
        for i, k in enumerate(names):
            attrs = self.writer.h5_file[f"data{first + i}"].attrs
            attrs["name"], attrs["units"] = k, dataset_units(k)

    def close(self):
        if self.writer is None:
            return
        from xml.etree import ElementTree

        w, self.writer = self.writer, None
        w.h5_file.close()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.final.with_suffix(".h5"), w.buf.getvalue())
        # the XML last: it marks a complete series
        atomic_write_text(self.final, ElementTree.tostring(w.xdmf_file, encoding="unicode"))


def stress_fields(prefix: str, sig_xyz: np.ndarray) -> dict[str, np.ndarray]:
    """Named scalar fields of a stress tensor per cell, plus von Mises and pressure."""
    xx, yy, xy = sig_xyz[:, 0], sig_xyz[:, 1], sig_xyz[:, 2]
    return {f"{prefix}_xx": xx, f"{prefix}_yy": yy, f"{prefix}_xy": xy,
            f"{prefix}_vm": np.sqrt(0.25 * (xx - yy) ** 2 + xy**2),
            "pressure" if prefix == "sigma" else f"{prefix}_p": -0.5 * (xx + yy)}


def system_mean(tauc: np.ndarray) -> np.ndarray:
    """Mean threshold of each cell's systems; ``tau_c = inf`` columns are no systems (fewer
    systems per cell: slip.reference_area, variant.N_fluctuation)."""
    if np.isfinite(tauc).all():
        return tauc.mean(axis=1)  # every column a system: the plain mean, as it always was
    used = np.isfinite(tauc)
    return np.where(used, tauc, 0.0).sum(axis=1) / used.sum(axis=1)


def snapshot_fields(model, state, gamma_ext: float, alpha_ext: float) -> dict[str, np.ndarray]:
    """The cell fields of a snapshot of a tensorial state at external strain ``gamma_ext``
    along ``alpha_ext`` (radians): total stress (sigma_*, pressure), plastic strain
    (eps_pl_*), the smallest distance to threshold (dtau_c_min), the thresholds of the cell's
    slip systems (tau_c_min, tau_c_mean; eq. 5) and its moduli where they vary per cell (G in
    variant A and with evolving moduli; B when per cell)."""
    f = stress_fields("sigma", model.total_stress(state, gamma_ext, alpha_ext))
    f.update({"eps_pl_xx": state.eps_pl[:, 0], "eps_pl_yy": state.eps_pl[:, 1],
              "eps_pl_xy": state.eps_pl[:, 2],
              "dtau_c_min": model.distance_to_threshold(state, gamma_ext, alpha_ext),
              "tau_c_min": state.tauc.min(axis=1), "tau_c_mean": system_mean(state.tauc)})
    if model.evolving_moduli:  # uniform moduli are in case.yaml, not repeated per cell
        f["G"] = model.moduli(state.eacc)
    elif np.ndim(model.G):
        f["G"] = model.G
    if np.ndim(model.B):
        f["B"] = model.B
    return {k: np.array(v, dtype=float) for k, v in f.items()}  # copies: the state moves on


def read_fields(path: Path) -> tuple[list[float], list[dict[str, np.ndarray]]]:
    """Times and cell fields (canonical order) of a field file written by
    :class:`FieldWriter`, read with meshio."""
    import meshio

    times, fields = [], []
    with meshio.xdmf.TimeSeriesReader(str(path)) as rd:
        rd.read_points_cells()
        for k in range(rd.num_steps):
            t, _, cd = rd.read_data(k)
            times.append(float(t))
            fields.append({name: np.asarray(v[0]).ravel() for name, v in cd.items()})
    return times, fields


def write_fields(path: Path, box, snapshots) -> None:
    """One XDMF time series (:class:`FieldWriter`) from ``(time, fields)`` pairs."""
    fw = FieldWriter(path, box)
    for t, f in snapshots:
        fw.write(t, f)
    fw.close()


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def _num(x) -> str:
    return f"{x:,}" if isinstance(x, int | np.integer) else f"{x:.4g}"


class PlainBar:
    """A progress bar as plain lines (stderr is not a terminal: log files, batch jobs): one
    line every ``every`` seconds and one at the end, with the rate and the time left."""

    def __init__(self, emit, total, desc: str, unit: str, every: float):
        self.emit, self.total, self.desc, self.unit, self.every = emit, total, desc, unit, every
        self.n, self.postfix = 0, ""
        self.t0 = self.last = time.perf_counter()

    def line(self) -> str:
        dt = time.perf_counter() - self.t0
        rate = self.n / dt if dt > 0 else 0.0
        out = f"{self.desc}: {_num(self.n)}"
        if self.total:
            out += f"/{_num(self.total)} {self.unit} ({100 * self.n / self.total:.0f}%)"
            if rate > 0 and self.n < self.total:
                out += f", {rate:,.3g} {self.unit}/s, {_eta((self.total - self.n) / rate)} left"
        else:
            out += f" {self.unit}, {rate:,.3g} {self.unit}/s"
        return out + (f", {self.postfix}" if self.postfix else "")

    def update(self, n: int = 1) -> None:
        self.set(self.n + n)

    def set(self, n: int, postfix: str | None = None) -> None:
        self.n = n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.emit(self.line())

    def close(self) -> None:
        self.emit(self.line() + f" in {time.perf_counter() - self.t0:.1f} s")


class TqdmBar:
    """A tqdm bar (rate and ETA) on an interactive stderr."""

    def __init__(self, total, desc: str, unit: str, position: int, out):
        from tqdm import tqdm

        try:  # some pseudo-terminals report a 0 x 0 size: tqdm would draw nothing
            cols, rows = os.get_terminal_size(out.fileno())
        except (AttributeError, OSError, ValueError):
            cols = rows = 0
        self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", position=position,
                        leave=position == 0, dynamic_ncols=cols > 0,
                        ncols=None if cols > 0 else 100, nrows=None if rows > 0 else 24,
                        file=out, mininterval=0.5)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set(self, n: int, postfix: str | None = None) -> None:
        if postfix is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set(self, n: int, postfix: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Progress that a person reads, on stderr: messages (``progress(msg, force)``) and bars
    (:meth:`bar`) for realizations, stages, KMC, patch tests and sweep points. On a terminal
    the bars are tqdm's (rate, time left) and messages are printed above them; otherwise (a
    log file) bars are plain lines every ``every`` seconds. Nothing is cut to the terminal
    width (a cut "stress 1.1545e-16" read "stress 1.1545"). Silent when ``quiet``."""

    def __init__(self, quiet: bool = False, every: float = 2.0, stream=None):
        self.quiet, self.every = quiet, every
        self.stream = stream
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.open: list = []

    @property
    def out(self):
        return self.stream if self.stream is not None else sys.stderr

    @property
    def tty(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())

    def _emit(self, msg: str) -> None:
        line = f"[femplast {time.perf_counter() - self.t0:7.1f}s] {msg}"
        if self.tty and any(isinstance(b, TqdmBar) for b in self.open):
            from tqdm import tqdm

            tqdm.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def __call__(self, msg: str, force: bool = False):
        if self.quiet:
            return
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            self._emit(msg)

    def bar(self, total, desc: str, unit: str = "it"):
        """A bar of ``total`` units (None: unknown); close it with ``close()``. Nested bars
        (a stage inside a realization) stack below the open ones."""
        if self.quiet:
            return NoBar()
        if self.tty:
            b = TqdmBar(total, desc, unit, len(self.open), self.out)
        else:
            b = PlainBar(self._emit, total, desc, unit, self.every)
        self.open.append(b)
        close = b.close

        def closing():
            close()
            if b in self.open:
                self.open.remove(b)

        b.close = closing
        return b


def progress_bar(progress, total, desc: str, unit: str = "it"):
    """``progress.bar(...)`` of a :class:`Progress`; a bar that shows nothing for any other
    progress callable (sweeps run realizations with a silent one)."""
    bar = getattr(progress, "bar", None)
    return bar(total, desc, unit) if bar is not None else NoBar()
