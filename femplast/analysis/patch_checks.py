"""The case checks of patch tests (femplast.analysis.patches), in a module without compiled
kernels: validating a case (``--check``) does not import numba."""

from __future__ import annotations

from femplast.errors import FemplastInputError


def check(case) -> None:
    """Consistency of the patches section with the rest of the case (FemplastInputError)."""
    pa, m = case.patches, case.mesh
    if not pa.enabled:
        return
    if case.model != "tensorial":
        raise FemplastInputError("patches.enabled", True, "only with model: tensorial")
    if pa.shape == "square":
        if m.kind == "gmsh":
            raise FemplastInputError("patches.shape", "square", "'disk' on gmsh meshes")
        if not pa.n:
            raise FemplastInputError("patches.n", pa.n, "at least one size")
        for i, n in enumerate(pa.n if m.kind != "geometry" else ()):
            if n > m.n:
                raise FemplastInputError(f"patches.n[{i}]", n, f"<= mesh.n = {m.n}")
    elif not pa.radius:
        raise FemplastInputError("patches.radius", pa.radius, "at least one radius (shape: "
                                 "disk)")
    elif m.kind == "geometry":
        _check_specimen_radii(case)
    else:
        for i, r in enumerate(pa.radius):
            if 2 * r >= m.L:
                raise FemplastInputError(f"patches.radius[{i}]", r, f"< mesh.L / 2 = {m.L / 2:g} "
                                         "(a disk must not overlap its own periodic image)")
    if not pa.alpha:
        raise FemplastInputError("patches.alpha", pa.alpha, "at least one orientation")
    if not pa.initial and not pa.gamma_ext and not pa.after:
        raise FemplastInputError("patches.gamma_ext", pa.gamma_ext, "at least one gamma_ext "
                                 "when patches.initial is false")
    for i, g in enumerate(pa.gamma_ext if not case.stages else ()):
        if g > case.loading.gamma_max:
            raise FemplastInputError(f"patches.gamma_ext[{i}]", g,
                                     f"in [0, loading.gamma_max = {case.loading.gamma_max}]")


def _check_specimen_radii(case) -> None:
    """Disks on a built-in specimen shape fit inside it (a file's size is known once meshed:
    positions that do not fit are skipped and counted, femplast.analysis.patches)."""
    g = case.geometry
    if g.shape == "file":
        return
    for i, r in enumerate(case.patches.radius):
        if 2 * r >= min(g.width, g.height):
            raise FemplastInputError(f"patches.radius[{i}]", r, "< min(geometry.width, "
                                     f"geometry.height) / 2 = {min(g.width, g.height) / 2:g} "
                                     "(a disk inside the specimen)")
