"""The realization pipeline on specimens (issue 19): KMC preparation (liquid + quench), stages
(load, unload, hold, force control, a reversed branch), sweeps over a geometry case and one
sample over MPI ranks, each on a small tension strip (418 triangles) through the same pipeline
as the periodic box.

Invariants checked from the written outputs alone, with the specimen's FE problem rebuilt:
the dynamics' stress is the FE solution (equilibrium residual < 1e-10), the grip force of the
tables is the reaction ``g . f``, and per stage the boundary work ``int F_drive d gamma``
(trapezoids over the elastic segments: exact, the force is linear between avalanches) equals
the change of stored energy plus the dissipation of the avalanches (replayed from the event
log at fixed drive), each athermal avalanche dissipating (>= 0).
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import interrupt_after
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.app.api import load_case, run
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import to_dsp

G0, B0 = 13.2, 59.0
STRIP = {"shape": "strip", "width": 40.0, "height": 40.0, "size": 3.3,
         "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}
STAGES = [{"name": "load", "kind": "load", "gamma": 0.03},
          {"name": "unload", "kind": "unload"},
          {"name": "hold", "kind": "hold", "temperature": 0.2, "events": 150},
          {"name": "force", "kind": "load", "stress": 1.3},
          {"name": "back", "kind": "load", "alpha_ext": 90, "gamma": 0.02, "start": "load"}]


def case_dict(backend="dense", **extra):
    d = {"mesh": {"kind": "geometry"}, "geometry": dict(STRIP),
         "loading": {"dgamma_ext": 2e-4, "gamma_max": 0.03, "stationary_from": 0.01},
         "redistribution": {"backend": backend}, "run": {"seed": 2, "realizations": 1}}
    d.update(extra)
    return d


def _model(case):
    from femplast.protocols.prepare import build_model

    return build_model(case, MPI.COMM_SELF)


class Replay:
    """Energies and forces of a specimen from its FE problem: the total stress of a plastic
    strain at drive ``t`` (plus a pre-stress), its stored energy (from the cell stresses:
    exact for linear triangles, whose strain is uniform per cell) and grip force."""

    def __init__(self, model, sigma0_xyz=None):
        self.m, self.el = model, model.el
        self.area = self.el.gather(self.el.area)
        self.sigma0 = 0.0 if sigma0_xyz is None else np.asarray(sigma0_xyz)

    def stress(self, eps, t):
        el = self.el
        return el.gather(el.stress(eps[el.cells], t)) + self.sigma0

    def energy(self, eps, t):
        d, s, p = to_dsp(self.stress(eps, t))
        return float(self.area @ (p * p / (2 * B0) + (d * d + s * s) / (2 * G0)))

    def force(self, stress_xyz):
        return self.m.box.area * self.el.drive_stress(stress_xyz)


def _slip(eps, ev, rows):
    for c, th, dg in zip(ev["cell"][rows], ev["theta"][rows], ev["d_gamma"][rows], strict=True):
        s2, c2 = math.sin(2 * th), math.cos(2 * th)
        eps[c] += 0.5 * dg * np.array([-s2, s2, c2])


def stage_balance(rp: Replay, f, eps0, t0):
    """(work, dissipation per avalanche, eps_end, t_end) of one stage file that starts at
    plastic strain ``eps0`` and drive ``t0``."""
    st, av = f["steps"], f["avalanches"]
    ev = {k: np.asarray(v) for k, v in f["events"].items()}
    sign = round(math.cos(math.radians(2 * f["state"].attrs["alpha_ext"])))
    g = np.asarray(st["gamma_ext"])
    after = rp.force(np.asarray(st["stress"]))
    assert np.abs(after - np.asarray(st["force"])).max() < 1e-12 * np.abs(after).max()
    if "stress_before" in st:  # stress control: one row per avalanche
        before = rp.force(np.asarray(st["stress_before"]))
    elif f["state"].attrs["kind"] == "hold":  # fixed drive: no work
        before = after.copy()
    else:  # strain control: one row per increment, the avalanche's onset at its step
        before = after.copy()
        steps = np.asarray(av["step"])
        assert len(np.unique(steps)) == len(steps)
        before[steps] = rp.force(np.asarray(av["stress_before"]))
    work = float(np.sum(0.5 * (after[:-1] + before[1:]) * sign * np.diff(g)))
    eps = eps0.copy()
    drops = []
    for step, ga in zip(np.asarray(av["step"]), np.asarray(av["gamma_ext"]), strict=True):
        t = t0 + sign * ga
        e0 = rp.energy(eps, t)
        _slip(eps, ev, ev["step"] == step)
        drops.append(e0 - rp.energy(eps, t))
    assert np.abs(eps - np.asarray(f["state"]["eps_pl"])).max() < 1e-12
    return work, np.array(drops), eps, t0 + sign * g[-1]


def check_stages(out: Path, case, rp: Replay, eps_start, names):
    """Per stage (branches from their start stage): equilibrium, force = reaction, energy
    balance; returns a row per stage."""
    el = rp.el
    ends = {}
    rows = {}
    prev = None
    for sg in case.stages:
        f = h5py.File(out / "stages" / sg.name / "realizations" / "r0000.h5", "r")
        eps0, t0 = ends[sg.start] if sg.start else (ends[prev] if prev else (eps_start, 0.0))
        work, drops, eps, t = stage_balance(rp, f, eps0, t0)
        ends[sg.name] = (eps, t)
        prev = sg.name
        fe = rp.stress(eps, t)
        dyn = np.asarray(f["state"]["stress"])
        assert np.abs(fe - dyn).max() < 1e-10 * np.abs(fe).max()  # dynamics == FE solve
        res = el.residual(eps[el.cells], t)
        assert res < 1e-10
        # the tables' grip force is the reaction g . f (+ the pre-stress' share)
        F = np.asarray(f["steps"]["force"])[-1]
        F0 = el.drive_force(eps[el.cells], t)
        if np.ndim(rp.sigma0):  # the pre-stress' share: A <sigma0> : Gd
            F0 += rp.force(rp.area @ rp.sigma0 / rp.area.sum())
        assert abs(F - F0) < 1e-10 * max(abs(F0), 1.0)
        dE = rp.energy(eps, t) - rp.energy(eps0, t0)
        balance = work - dE - drops.sum()
        scale = max(abs(work), abs(dE), 1e-3)
        assert abs(balance) < 1e-10 * scale, (sg.name, work, dE, drops.sum())
        if sg.kind != "hold":  # athermal avalanches dissipate
            assert drops.min(initial=0.0) > -1e-12 * scale, (sg.name, drops.min())
        rows[sg.name] = dict(work=work, dE=dE, dissipation=drops.sum(), avalanches=len(drops),
                             force=F, t=t, displacement=np.asarray(f["steps"]["displacement"]))
        print(f"\n{sg.name:8s} work {work:11.5f} dE {dE:11.5f} dissipation {drops.sum():10.5f}"
              f" avalanches {len(drops):4d} min drop {drops.min() if len(drops) else 0:10.3e} "
              f"balance/scale {abs(balance) / scale:.1e} residual {res:.1e}", end="")
    assert list(rows) == names
    return rows


def test_stages_on_a_specimen_balance_energy_and_control_the_grip_force(tmp_path):
    """Load (strain), unload to zero grip force, hold with thermal events, force control to a
    target, and a reversed branch from the loaded state; every stage in equilibrium, with
    the energy balance closed to 1e-10 and avalanches dissipating."""
    case = load_case(case_dict(stages=STAGES))
    run(case, tmp_path / "o", event_log=True)
    m = _model(case)
    rp = Replay(m)
    rows = check_stages(tmp_path / "o", case, rp, np.zeros((m.num_cells, 3)),
                        [s["name"] for s in STAGES])
    F_load = rows["load"]["force"]
    assert F_load > 0 and rows["load"]["avalanches"] > 5 and rows["load"]["dissipation"] > 0
    assert abs(rows["unload"]["force"]) < 1e-12 * F_load  # unloaded: zero grip force
    assert rows["unload"]["t"] < rows["load"]["t"]  # by moving the grip back
    target = 1.3 * m.box.area
    assert abs(rows["force"]["force"] - target) < 1e-12 * target
    assert rows["force"]["avalanches"] > 0
    # the reversed branch starts at the loaded state and moves the grip back by 0.02 H
    d = rows["back"]["displacement"]
    assert d[0] == pytest.approx(0.03 * 40.0, rel=1e-12)
    assert d[-1] == pytest.approx(0.01 * 40.0, rel=1e-12)
    assert rows["back"]["force"] < F_load
    # the stored energy of the cell stresses is the FE energy (no pre-stress here)
    eps, t = np.asarray(h5py.File(tmp_path / "o/stages/back/realizations/r0000.h5")[
        "state"]["eps_pl"]), rows["back"]["t"]
    e_fe = rp.el.energy(eps[rp.el.cells], t)
    assert abs(rp.energy(eps, t) - e_fe) < 1e-10 * e_fe
    # plots resolve a stage's stress as the pipeline does: the reversed branch rises
    from femplast.postprocess.data import load_run

    pr = load_run(tmp_path / "o")
    for name, sign in (("load", 1), ("back", -1)):
        r = pr.stages[name][0]
        nominal = r.steps.get("nominal_stress", r.steps["drive_stress"])
        np.testing.assert_array_equal(r.resolved(), sign * nominal)
    s = json.loads((tmp_path / "o" / "summary.json").read_text())["stages"]
    assert s["force"]["reached"] == 1 and s["unload"]["reached"] == 1
    assert s["force"]["stress_final_mean"] == pytest.approx(1.3, rel=1e-12)


def test_kmc_quench_on_a_specimen_then_load(tmp_path):
    """KMC liquid at T = 0.3 with the grips held, quenched at T = 0: the KMC dynamics keep the
    FE equilibrium, the quenched state is stable with its stress as the pre-stress, and a
    load stage from it keeps the energy balance (pre-stress included)."""
    from femplast.streams import realization_rng
    from femplast.tensorial.aqs import AQSDriver, any_active_at
    from femplast.tensorial.kmc import KMC, quench

    kmc = {"enabled": True, "temperature": 0.3, "max_events": 1500, "stop": "max_events"}
    case = load_case(case_dict(kmc=kmc, stages=[dict(STAGES[0], gamma=0.05)]))
    m = _model(case)
    st = m.new_state(realization_rng(5, 0))
    drv = AQSDriver(m, st, 0.0, 1.0, 1)
    k = KMC(drv, 0.3, 1.0, window=2 * m.num_cells, tolerance=0.05)
    k.run(1500, until_stationary=False)
    el = m.el
    assert np.abs(st.eps_pl).max() > 0
    fe = m.fe_stress(st, 0.0, 0.0)
    assert np.abs(fe - m.total_stress(st, 0.0, 0.0)).max() < 1e-10 * np.abs(fe).max()
    assert el.residual(st.eps_pl[el.cells], 0.0) < 1e-10
    quench(m, st, drv)
    assert (st.eps_pl == 0).all() and np.array_equal(st.sig, st.sigma0)
    assert not any_active_at(0.0, st.sig, m.load_response(0.0), st.sin2, st.cos2, st.tauc,
                             0.0, 0.0)
    # the pipeline: KMC preparation, quench file, then the load stage
    run(case, tmp_path / "o", event_log=True)
    q = h5py.File(tmp_path / "o" / "quench" / "r0000.h5", "r")
    sigma0 = np.asarray(q["state"]["sigma0"])
    assert np.abs(sigma0).max() > 0.1 and (np.asarray(q["state"]["eps_pl"]) == 0).all()
    assert q["kmc"].attrs["kmc_events"] == 1500
    f = h5py.File(tmp_path / "o" / "stages" / "load" / "realizations" / "r0000.h5", "r")
    np.testing.assert_array_equal(np.asarray(f["state"]["sigma0"]), sigma0)
    rows = check_stages(tmp_path / "o", case, Replay(m, sigma0), np.zeros((m.num_cells, 3)),
                        ["load"])
    assert rows["load"]["avalanches"] > 3
    assert rows["load"]["force"] > 0


def test_sweep_over_a_specimen_equals_plain_runs(tmp_path):
    """A 2-point sweep (k) over the strip: each point's stationary statistics are those of
    the specimen's drive stress (nominal stress F / A) in a plain run of the point's case,
    to round-off (deterministic: the same pipeline)."""
    from femplast.app import sweep as S
    from femplast.app.runner import run_case

    sw = {"enabled": True, "errors": [], "grid": {"k": [2.0, 2.4]}}
    case = load_case(case_dict(sweep=sw, run={"seed": 2, "realizations": 2},
                               output={"fields": False}))
    run_case(case, tmp_path / "sw", MPI.COMM_SELF, quiet=True)
    for pt in S.plan(case):
        p = json.loads(S.point_path(tmp_path / "sw", pt["point"]).read_text())
        plain = tmp_path / f"plain{pt['point']}"
        run_case(S.point_case(case, pt), plain, MPI.COMM_SELF, quiet=True)
        s = []
        for r in range(2):
            st = h5py.File(plain / "realizations" / f"r{r:04d}.h5", "r")["steps"]
            sel = np.asarray(st["gamma_ext"]) > 0.01
            s.append(np.asarray(st["drive_stress"])[sel])
        s = np.concatenate(s)
        assert p["statistics"]["sigma_xy_mean"] == pytest.approx(s.mean(), rel=1e-12)
        assert p["num_cells"] == 418 and p["statistics"]["avalanches_per_realization"] > 3


@pytest.mark.parametrize("override,key", [
    ({"stages": [{"name": "a", "kind": "load", "gamma": 0.1, "alpha_ext": 45}]},
     "stages[0].alpha_ext"),
    ({"sweep": {"enabled": True, "errors": [], "grid": {"k": [2.0]}, "finite_size": [4]}},
     "sweep.finite_size"),
])
def test_specimen_protocol_refusals_name_the_key(override, key):
    with pytest.raises(FemplastInputError) as exc:
        load_case(case_dict(**override))
    assert exc.value.key == key


def test_force_control_needs_an_affine_drive():
    """A side pulled on top of the grips is not one affine field: stress control is refused
    when the run is set up, naming the stage."""
    geo = dict(STRIP, boundaries={"bottom": "clamped", "top": {"displacement": [0.0, 1.0]},
                                  "left": {"displacement": [0.5, None]}})
    case = load_case(case_dict(geometry=geo, stages=[
        {"name": "a", "kind": "load", "gamma": 0.01}, {"name": "b", "kind": "unload"}]))
    from femplast.protocols.pipeline import TensorialRuns

    with pytest.raises(FemplastInputError) as exc:
        TensorialRuns(case, Path("unused"), MPI.COMM_SELF, lambda *a, **k: None)
    assert exc.value.key == "stages[1].kind"


def same_datasets(a: Path, b: Path, rtol: float) -> int:
    """Every dataset of the realization and quench files of run ``a`` equals run ``b``'s
    (floats to ``rtol`` of the dataset's largest finite value, infinities at the same places,
    the rest exactly); their count."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.h5") if "fields" not in p.parts)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.h5")
                           if "fields" not in p.parts)
    compared = 0
    for rel in files:
        fa, fb = h5py.File(a / rel, "r"), h5py.File(b / rel, "r")
        names: list[str] = []
        fa.visititems(lambda n, o, names=names: names.append(n)
                      if isinstance(o, h5py.Dataset) else None)
        for name in names:
            x, y = np.asarray(fa[name]), np.asarray(fb[name])
            assert x.shape == y.shape, (rel, name)
            if x.dtype.kind == "f" and rtol > 0:
                fin = np.isfinite(x)  # tau_c = inf: unused systems, equal where they are
                assert np.array_equal(fin, np.isfinite(y)), (rel, name)
                assert np.array_equal(x[~fin], y[~fin]), (rel, name)
                x, y = x[fin], y[fin]
                scale = max(np.abs(x).max(initial=0.0), 1.0)
                assert np.abs(x - y).max(initial=0.0) <= rtol * scale, (rel, name)
            else:
                assert np.array_equal(x, y), (rel, name)
            compared += 1
        assert fa.attrs.get("num_events") == fb.attrs.get("num_events")
    return compared


@pytest.mark.parametrize("after_ticks", [4, 11])
def test_interrupted_specimen_protocol_resumes_bit_identically(tmp_path, monkeypatch,
                                                               after_ticks):
    """KMC preparation and stages on a specimen, stopped at a safe point as SIGTERM would
    (checkpoint written), then ``--resume``: the same datasets, bit for bit."""
    from femplast.app.runner import run_case
    from femplast.protocols import checkpoint as ck

    data = case_dict(kmc={"enabled": True, "temperature": 0.3, "max_events": 1500,
                          "stop": "max_events"}, stages=STAGES,
                     run={"seed": 3, "realizations": 1, "checkpoint_interval": 0.05})
    run_case(load_case(data), tmp_path / "ref", MPI.COMM_SELF, quiet=True, event_log=True)
    tick = interrupt_after(monkeypatch, after_ticks)
    out = tmp_path / "out"
    with pytest.raises(ck.Interrupted):
        run_case(load_case(data), out, MPI.COMM_SELF, quiet=True, event_log=True)
    cp = ck.load(out / "checkpoint" / "rank000-of-001.npz")
    assert cp["current"] is not None
    monkeypatch.setattr(ck.Interrupter, "tick", tick)
    run_case(load_case(data), out, MPI.COMM_SELF, quiet=True, resume=True, event_log=True)
    assert same_datasets(tmp_path / "ref", out, 0.0) > 40
    print(f"\ninterrupted after {after_ticks} safe points in phase {cp['current']['phase']} "
          f"(stage {cp['current']['stage_idx']}): bit-identical after --resume")


SAMPLE = dict(kmc={"enabled": True, "temperature": 0.3, "max_events": 800,
                   "stop": "max_events"},
              stages=STAGES[:3], run={"seed": 4, "realizations": 1, "parallel": "sample"})


@pytest.mark.mpi
def test_sample_over_two_ranks_equals_serial(tmp_path):
    """``run.parallel: sample`` on a specimen (KMC preparation, load, unload, hold; direct
    backend): 2 ranks write the same realization and quench files as 1 rank."""
    script = Path(__file__).parent / "mpi_scripts" / "specimen_sample.py"
    mpirun = Path(sys.executable).parent / "mpirun"
    proc = subprocess.run([str(mpirun), "-n", "2", sys.executable, str(script),
                           str(tmp_path / "par")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    case = load_case(case_dict(backend="direct", **SAMPLE))
    run(case, tmp_path / "ser", comm=MPI.COMM_SELF)
    assert same_datasets(tmp_path / "ser", tmp_path / "par", 1e-10) > 30
    s = json.loads((tmp_path / "ser" / "summary.json").read_text())
    p = json.loads((tmp_path / "par" / "summary.json").read_text())
    assert s["stages"]["load"]["events_mean"] == p["stages"]["load"]["events_mean"] > 3
    assert s["kmc"]["per_realization"][0]["kmc_events"] == 800
