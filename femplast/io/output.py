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
        "sigma_vm", "pressure", "dtau_c_min", "x", "sigma0_xy", "G", "B", "increment_xy", "tau",
        "self_response", "box_stress"),
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


class FieldWriter:
    """Time series of named cell fields in XDMF 3 (one grid per time holding every field),
    opened directly by ParaView, meshio and pyvista.

    Heavy data go to ``<name>.h5`` (``/mesh/points``, ``/mesh/cells``, ``/fields/<t>/<field>``);
    the XML is written on :meth:`close`. Both are built in memory and written atomically on
    close (the XML last), so an interrupted run leaves no complete-looking file. Fields are
    given in global canonical cell order; rank 0 writes.
    """

    def __init__(self, path: Path, box):
        self.final = Path(path)
        self.comm = box.mesh.comm
        self.points, cells = cell_mesh(box)
        self.cell_type, self.cells = cells[0]
        self.steps: list[tuple[float, list[str]]] = []
        self.h5 = None
        if self.comm.rank == 0:
            import io

            import h5py

            # built in memory and written at close (atomic_write_bytes): HDF5 never meets a
            # full disk, which makes its library abort the process
            self.buf = io.BytesIO()
            self.h5 = h5py.File(self.buf, "w")
            self.h5["mesh/points"] = self.points
            self.h5["mesh/cells"] = self.cells
            for k in ("points", "cells"):
                self.h5[f"mesh/{k}"].attrs["units"] = dataset_units(k)

    @property
    def times(self) -> list[float]:
        return [t for t, _ in self.steps]

    def write(self, t: float, fields: dict[str, np.ndarray]):
        """Write cell fields (global canonical order, one value per cell) at time ``t``."""
        if self.h5 is not None:
            i = len(self.steps)
            for k, v in fields.items():
                self.h5[f"fields/{i}/{k}"] = np.asarray(v, dtype=float)
                self.h5[f"fields/{i}/{k}"].attrs["units"] = dataset_units(k)
        self.steps.append((float(t), list(fields)))

    def _xml(self) -> str:
        h5name = self.final.with_suffix(".h5").name
        nc, nv = self.cells.shape
        topo = {"quad": "Quadrilateral", "triangle": "Triangle"}[self.cell_type]
        out = ['<?xml version="1.0"?>', '<Xdmf Version="3.0" '
               'xmlns:xi="http://www.w3.org/2001/XInclude">', "<Domain>",
               '<Grid Name="femplast" GridType="Collection" CollectionType="Temporal">']
        for i, (t, names) in enumerate(self.steps):
            out += ['<Grid Name="cells" GridType="Uniform">', f'<Time Value="{t!r}"/>',
                    f'<Topology TopologyType="{topo}" NumberOfElements="{nc}">',
                    f'<DataItem Dimensions="{nc} {nv}" NumberType="Int" Precision="8" '
                    f'Format="HDF">{h5name}:/mesh/cells</DataItem></Topology>',
                    '<Geometry GeometryType="XY">',
                    f'<DataItem Dimensions="{len(self.points)} 2" Precision="8" '
                    f'Format="HDF">{h5name}:/mesh/points</DataItem></Geometry>']
            for k in names:
                out.append(f'<Attribute Name="{k}" AttributeType="Scalar" Center="Cell">'
                           f'<DataItem Dimensions="{nc}" Precision="8" Format="HDF">'
                           f"{h5name}:/fields/{i}/{k}</DataItem></Attribute>")
            out.append("</Grid>")
        out += ["</Grid>", "</Domain>", "</Xdmf>"]
        return "\n".join(out) + "\n"

    def close(self):
        if self.h5 is None:
            return
        self.h5.close()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.final.with_suffix(".h5"), self.buf.getvalue())
        atomic_write_text(self.final, self._xml())  # the XML last: it marks a complete series
        self.h5, self.buf = None, None


def stress_fields(prefix: str, sig_xyz: np.ndarray) -> dict[str, np.ndarray]:
    """Named scalar fields of a stress tensor per cell, plus von Mises and pressure."""
    xx, yy, xy = sig_xyz[:, 0], sig_xyz[:, 1], sig_xyz[:, 2]
    return {f"{prefix}_xx": xx, f"{prefix}_yy": yy, f"{prefix}_xy": xy,
            f"{prefix}_vm": np.sqrt(0.25 * (xx - yy) ** 2 + xy**2),
            "pressure" if prefix == "sigma" else f"{prefix}_p": -0.5 * (xx + yy)}


def snapshot_fields(model, state, gamma_ext: float, alpha_ext: float) -> dict[str, np.ndarray]:
    """The cell fields of a snapshot of a tensorial state at external strain ``gamma_ext``
    along ``alpha_ext`` (radians): total stress (sigma_*, pressure), plastic strain
    (eps_pl_*) and the smallest distance to threshold (dtau_c_min)."""
    f = stress_fields("sigma", model.total_stress(state, gamma_ext, alpha_ext))
    f.update({"eps_pl_xx": state.eps_pl[:, 0], "eps_pl_yy": state.eps_pl[:, 1],
              "eps_pl_xy": state.eps_pl[:, 2],
              "dtau_c_min": model.distance_to_threshold(state, gamma_ext, alpha_ext)})
    return {k: np.array(v, dtype=float) for k, v in f.items()}  # copies: the state moves on


def write_fields(path: Path, box, snapshots) -> None:
    """One XDMF time series (:class:`FieldWriter`) from ``(time, fields)`` pairs."""
    fw = FieldWriter(path, box)
    for t, f in snapshots:
        fw.write(t, f)
    fw.close()


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
