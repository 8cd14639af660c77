"""Prepare a realization's model and initial state from a case (case -> model).

The mesh and model of a case (its variant included), and the initial state read from a file
femplast wrote (``initial.state``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mpi4py import MPI

from femplast.config.case import Case, resolve_path
from femplast.errors import FemplastInputError


def build_box(case: Case, comm: MPI.Comm):
    from femplast.fe.mesh import box_from_options

    m = case.mesh
    if m.kind == "geometry":
        from femplast.fe.geometry import build_geometry, spec_from_case

        geo = build_geometry(spec_from_case(case), comm)
        geo.conditions = dict(case.geometry.boundaries)
        return geo
    return box_from_options(m.kind, m.n, m.L, str(resolve_path(case, m.file)) if m.file else None,
                            m.size, comm)


def build_model(case: Case, comm: MPI.Comm, index: int = 0):
    """The tensorial model of a case, its model variant included (section variant,
    femplast.tensorial.variants); ``index``: the realization whose moduli field is drawn when every
    realization has its own (variant.moduli: weibull without variant.G_seed)."""
    from femplast.tensorial.variants import build_model as build_variant_model

    return build_variant_model(case, build_box(case, comm), index)


def load_initial_state(path: Path, model, key: str = "initial.state"):
    """(sigma0 [xx,yy,xy] per cell, theta, tauc) from a state file femplast wrote."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            g = f["state"]
            sig = np.asarray(g["stress"])
            theta = np.asarray(g["theta"])
            tauc = np.asarray(g["tau_c"])
    except (OSError, KeyError) as exc:
        raise FemplastInputError(key, str(path), f"an HDF5 file with a 'state' group "
                                 f"(stress, theta, tau_c) written by femplast ({exc})") from None
    nc, N = model.num_cells, model.params.N
    if sig.shape != (nc, 3) or theta.shape != (nc, N) or tauc.shape != (nc, N):
        raise FemplastInputError(key, str(path), f"a state of {nc} cells with N = {N} slip "
                                 f"systems (file has {theta.shape[0]} cells x {theta.shape[1]})")
    return sig, theta, tauc
