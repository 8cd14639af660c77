"""Specimens with boundary conditions (femplast.fe.boundary): exact homogeneous solutions,
reactions against the average stress, the Kirsch hole, an inclusion far from the boundaries,
energy, input validation."""

import numpy as np
import pytest
from conftest import B0, G0
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.errors import FemplastInputError
from femplast.fe.boundary import BoundedElasticity
from femplast.fe.elasticity import PeriodicElasticity
from femplast.fe.geometry import ShapeSpec, build_geometry
from femplast.fe.mesh import gmsh_box

SHEAR = {"bottom": "clamped", "top": {"displacement": [1.0, 0.0]}}
TENSION = {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}


def _geo(**kw):
    return build_geometry(ShapeSpec(**kw), MPI.COMM_SELF)


@pytest.mark.parametrize("element", ["tri", "quad"])
def test_walls_sheared_periodic_strip_is_exact_simple_shear(element):
    """u = gamma y e_x is in the FE space: every cell has sigma_xy = G gamma, nothing else."""
    g = _geo(shape="strip", width=6.0, height=3.0, size=0.5, periodic="x", element=element)
    el = BoundedElasticity(g, SHEAR, G0, B0)
    z = np.zeros((el.num_local, 3))
    gam = 0.01
    sig = el.stress(z, gam)
    assert np.abs(sig - [0.0, 0.0, G0 * gam]).max() < 1e-12 * G0
    assert el.residual(z, gam) < 1e-12
    R = el.reactions(z, gam)
    # wall force = shear stress x wall length, equal and opposite on the two walls
    assert R["top"] == pytest.approx([G0 * gam * 6.0, 0.0], abs=1e-11)
    assert R["bottom"] == pytest.approx([-G0 * gam * 6.0, 0.0], abs=1e-11)
    # boundary work = stored energy (elastic): int F dgamma = 1/2 k gamma^2
    assert el.drive_force(z, gam) * gam / 2 == pytest.approx(el.energy(z, gam), rel=1e-12)
    assert el.energy(z, gam) == pytest.approx(0.5 * G0 * gam**2 * 18.0, rel=1e-12)


def test_reactions_equal_average_stress_with_plastic_strain(rng):
    """sum_n x_n (x) f_n over the supports == int sigma dA (v = e_i x_j is a P1 test function),
    for any eigenstrain: the macroscopic response of a specimen from its boundary forces."""
    g = _geo(shape="notched_strip", width=8.0, height=4.0, size=0.4, notch_depth=2.0,
             notch_radius=0.5)
    el = BoundedElasticity(g, TENSION, G0, B0)
    eps = rng.normal(0, 1e-2, (el.num_local, 3))
    t = 0.02
    mean = el.mean(el.stress(eps, t)) * g.area
    R = el.reactions(eps, t)
    # bottom at y = 0: sigma_yy A = H F_top,y ; sigma_xy A = H F_top,x
    assert mean[1] == pytest.approx(g.height * R["top"][1], rel=1e-10)
    assert mean[2] == pytest.approx(g.height * R["top"][0], rel=1e-10, abs=1e-10)
    assert el.residual(eps, t) < 1e-10
    # and the total force on the body vanishes (free surfaces elsewhere)
    assert np.abs(R["top"] + R["bottom"]).max() < 1e-10 * np.abs(R["top"]).max()
    # drive force = top displacement per unit gamma (H (0, 1)) . F_top
    assert el.drive_force(eps, t) == pytest.approx(g.height * R["top"][1], rel=1e-12)


def _hoop_concentration(g, sig, s_nom, a, h):
    """Hoop stress at the hole edge where it peaks (theta = 0, pi for tension along y):
    least squares c0 + c1 (r - a) + c2 phi^2 + c3 (r - a)^2 over the cells within 4 h of the
    edge and 20 deg of the x axis, extrapolated to r = a."""
    mid = g.midpoints()[np.argsort(g.canonical)] - [g.width / 2, g.height / 2]
    r, th = np.hypot(*mid.T), np.arctan2(mid[:, 1], mid[:, 0])
    phi = np.arctan2(np.sin(th), np.abs(np.cos(th)))
    c, s = np.cos(th), np.sin(th)
    hoop = sig[:, 0] * s * s + sig[:, 1] * c * c - 2 * sig[:, 2] * s * c
    sel = (r < a + 4 * h) & (np.abs(phi) < 0.35)
    A = np.stack([np.ones(sel.sum()), r[sel] - a, phi[sel] ** 2, (r[sel] - a) ** 2], 1)
    return np.linalg.lstsq(A, hoop[sel], rcond=None)[0][0] / s_nom


@pytest.mark.heavy
def test_kirsch_hole_concentration_approaches_three():
    """Plate 60 x 120 with a hole of radius 2 (finite-width gross factor 3.015, Heywood),
    gripped at both ends. Observed (edge size a/2.5, a/5, a/10): 2.71, 3.00, 3.08."""
    a, out = 2.0, []
    for h in (a / 2.5, a / 10):
        g = _geo(shape="hole", width=60.0, height=120.0, hole_radius=a, size=6.0, size_min=h)
        el = BoundedElasticity(g, TENSION, G0, B0)
        z = np.zeros((el.num_local, 3))
        s_nom = el.reactions(z, 1.0)["top"][1] / g.width
        out.append(_hoop_concentration(g, el.gather(el.stress(z, 1.0)), s_nom, a, h))
    assert abs(out[1] - 3.0) < 0.1, out
    assert abs(out[1] - 3.0) < abs(out[0] - 3.0), out


def _disk(el, g, centre, R0, eps0):
    mid = g.midpoints()[np.argsort(g.canonical)] - centre
    r, th = np.hypot(*mid.T), np.arctan2(mid[:, 1], mid[:, 0])
    inc = r < R0
    eps = np.zeros((el.num_local, 3))
    eps[inc, 2] = eps0
    sig = el.stress(eps)[:, 2]
    A = el.area[inc].sum()
    sel = (r > 2 * R0) & (r < 4 * R0)
    basis = np.vstack([r[sel] ** 2, np.cos(4 * th[sel])]).T
    c4 = np.linalg.lstsq(basis, r[sel] ** 2 * sig[sel], rcond=None)[0][1]
    return c4 / A, np.sum(el.area[inc] * sig[inc]) / A


@pytest.mark.heavy
def test_inclusion_far_from_boundaries_matches_periodic_box():
    """A sheared disk (radius 0.05) in the middle of a unit specimen clamped on all sides and
    in the periodic unit box (same cell size): inside stress and far-field cos(4 theta)
    amplitude agree within 3 % (clamped vs periodic images); inside within 15 % of Eshelby
    (staircase disk of 3 cells radius, as in test_elasticity: observed 1.147)."""
    h, R0, eps0 = 1.0 / 64, 0.05, 1e-2
    g = _geo(shape="strip", width=1.0, height=1.0, size=h)
    el = BoundedElasticity(g, {k: "clamped" for k in ("bottom", "top", "left", "right")},
                           G0, B0)
    far_b, in_b = _disk(el, g, [0.5, 0.5], R0, eps0)
    box = gmsh_box(None, 1.0, h, MPI.COMM_SELF)
    far_p, in_p = _disk(PeriodicElasticity(box, G0, B0), box, [0.5, 0.5], R0, eps0)
    assert in_b == pytest.approx(in_p, rel=0.03)
    assert far_b == pytest.approx(far_p, rel=0.03)
    assert in_b / (-G0 * eps0 / (1 + G0 / B0)) == pytest.approx(1.0, abs=0.15)


def test_free_floating_body_is_refused():
    g = _geo(shape="strip", width=2.0, height=1.0, size=0.5)
    with pytest.raises(FemplastInputError) as exc:
        BoundedElasticity(g, {"bottom": "roller"}, G0, B0)  # x translation free
    assert exc.value.key == "geometry.boundaries"


@pytest.mark.parametrize("spec,key", [
    ({"middle": "clamped"}, "geometry.boundaries.middle"),
    ({"top": "glued"}, "geometry.boundaries.top"),
    ({"top": {"displacement": [None, None]}}, "geometry.boundaries.top"),
    ({"top": {"displacement": [1.0]}}, "geometry.boundaries.top"),
])
def test_bad_conditions_name_the_key(spec, key):
    g = _geo(shape="hole", width=4.0, height=4.0, hole_radius=0.5, size=0.5)
    with pytest.raises(FemplastInputError) as exc:
        BoundedElasticity(g, spec, G0, B0)
    assert exc.value.key == key


def test_roller_and_clamp_give_uniaxial_tension():
    """Bottom roller + left roller + top displaced along y: exact uniaxial stress
    sigma_yy = E' eps with free lateral contraction (E' = 4 B G / (B + G), plane)."""
    g = _geo(shape="pillar", width=2.0, height=5.0, size=0.4)
    el = BoundedElasticity(g, {"bottom": "roller", "left": "roller",
                               "top": {"displacement": [None, 1.0]}}, G0, B0)
    z = np.zeros((el.num_local, 3))
    sig = el.stress(z, 1e-3)
    E2 = 4 * B0 * G0 / (B0 + G0)
    assert np.abs(sig - [0.0, E2 * 1e-3, 0.0]).max() < 1e-12 * E2


def test_drive_stress_gives_the_force_of_affine_grips(rng):
    """Grips moved as an affine field: the drive force is the specimen area times the mean
    stress resolved on the drive gradient, for any plastic strain (force-displacement curves
    from the steps' mean stress)."""
    g = _geo(shape="hole", width=6.0, height=8.0, hole_radius=1.0, size=0.5)
    for spec, Gd in ((TENSION, [[0, 0], [0, 1]]), (SHEAR, [[0, 1], [0, 0]])):
        el = BoundedElasticity(g, spec, G0, B0)
        assert np.allclose(el.drive_gradient, Gd, atol=1e-12)
        eps = rng.normal(0, 1e-2, (el.num_local, 3))
        F = el.drive_force(eps, 0.03)
        assert g.area * el.drive_stress(el.mean(el.stress(eps, 0.03))) == pytest.approx(
            F, rel=1e-10)
    el = BoundedElasticity(g, {"bottom": "clamped", "top": {"displacement": [0, 1]},
                               "left": {"displacement": [0.5, None]}}, G0, B0)
    assert el.drive_gradient is None  # a pulled side on top of the grips: not affine


@pytest.mark.mpi
def test_two_ranks_match_serial(tmp_path):
    """Stresses, reactions, drive force and energy of three specimens (a notch, walls with
    periodic sides, rollers) on 2 ranks == 1 rank (gmsh cell order is canonical)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "mpi_scripts" / "specimen_response.py"
    sys.path.insert(0, str(script.parent))
    import specimen_response

    out = tmp_path / "out.npz"
    mpirun = Path(sys.executable).parent / "mpirun"
    proc = subprocess.run([str(mpirun), "-n", "2", sys.executable, str(script), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    par = np.load(out)
    assert int(par["nranks"]) == 2
    for name in specimen_response.CASES:
        assert par[f"{name}_owned"].min() > 0
        ser = specimen_response.compute(name, MPI.COMM_SELF)
        assert par[f"{name}_residual"] < 1e-10
        force = max(np.abs(v).max() for k, v in ser.items() if k.startswith("reaction"))
        for key, val in ser.items():
            if key in ("residual", "owned"):
                continue
            scale = force if key.startswith("reaction") else max(np.abs(val).max(), 1e-300)
            assert np.abs(par[f"{name}_{key}"] - val).max() < 1e-10 * scale, (name, key)
