"""Loading protocols (femplast.protocols): stress control, unloading, branches, folding."""

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.app.cases import case_from_dict
from femplast.app.runner import run_case
from femplast.errors import FemplastInputError

BASE = dict(model="tensorial", mesh=dict(kind="quad", n=8, L=52.8), slip=dict(N=16),
            loading=dict(dgamma_ext=1e-4))


def resolved(stress, alpha_deg):
    a = np.deg2rad(2 * alpha_deg)
    return np.sin(a) * 0.5 * (stress[..., 1] - stress[..., 0]) + np.cos(a) * stress[..., 2]


def run(tmp_path, stages, realizations=1, **extra):
    case = case_from_dict(dict(BASE, stages=stages, run=dict(realizations=realizations, seed=4),
                               **extra))
    out = tmp_path / "out"
    return out, run_case(case, out, MPI.COMM_SELF, quiet=True)


def test_stress_control_reaches_target_between_avalanches(tmp_path):
    out, s = run(tmp_path, [dict(name="up", stress=0.45),
                            dict(name="unload", kind="unload"),
                            dict(name="back", alpha_ext=90, stress=0.3)], realizations=2)
    errs = []
    for name, target, alpha in (("up", 0.45, 0.0), ("unload", 0.0, 90.0), ("back", 0.3, 90)):
        for r in (0, 1):
            with h5py.File(out / "stages" / name / "realizations" / f"r000{r}.h5") as f:
                a = f["state"].attrs["alpha_ext"]
                assert a == alpha
                tot = resolved(f["state/stress"][()].mean(axis=0), a)
                steps = resolved(f["steps/stress"][()], a)
                before = resolved(f["steps/stress_before"][()], a)
                g = f["steps/gamma_ext"][()]
                assert f["state"].attrs["reached"]
                errs.append(abs(tot - target))
                # avalanches start at or below the target, strain grows monotonically
                assert (before[1:-1] <= target + 1e-10).all()
                assert (np.diff(g) >= 0).all()
                assert abs(steps[-1] - target) < 1e-10
        assert s["stages"][name]["max_abs_stress_error"] < 1e-10
    print(f"\nstress control: max |Sigma - target| = {max(errs):.2e} "
          f"(up: {s['stages']['up']['events_mean']:.0f} events on average)")
    assert max(errs) < 1e-10
    assert s["stages"]["up"]["events_mean"] > 0  # avalanches happened on the way


def test_bauschinger_reverse_branch_yields_earlier(tmp_path):
    stages = [dict(name="load", gamma=0.6),
              dict(name="unload", kind="unload"),
              dict(name="forward", start="unload", alpha_ext=0, gamma=0.06),
              dict(name="reverse", start="unload", alpha_ext=90, gamma=0.06)]
    out, s = run(tmp_path, stages, realizations=6)
    g_probe = 0.03
    fw, rv = [], []
    for r in range(6):
        vals = {}
        for name in ("forward", "reverse", "unload"):
            with h5py.File(out / "stages" / name / "realizations" / f"r{r:04d}.h5") as f:
                a = f["state"].attrs["alpha_ext"]
                g = f["steps/gamma_ext"][()]
                vals[name] = (g, resolved(f["steps/stress"][()], a), f["state/stress"][()])
        # both branches start from the same unloaded state (zero external stress)
        assert abs(vals["forward"][1][0]) < 1e-10 and abs(vals["reverse"][1][0]) < 1e-10
        k = int(round(g_probe / 1e-4))
        fw.append(vals["forward"][1][k])
        rv.append(vals["reverse"][1][k])
    fw, rv = np.mean(fw), np.mean(rv)
    print(f"\nBauschinger (6 realizations, 8x8): resolved stress at reload strain {g_probe}: "
          f"forward {fw:.4f}, reverse {rv:.4f}, margin {fw - rv:.4f}")
    assert fw - rv > 0.05


def test_folding_keeps_the_fe_stress(tmp_path):
    """After stages in several orientations the stress equals a fresh FE solve."""
    from femplast.fe.mesh import structured_box
    from femplast.protocols.stages import (
        Stage,
        StrainStage,
        StressStage,
        fold,
        init_protocol_state,
    )
    from femplast.streams import realization_rng
    from femplast.tensorial.model import TensorialModel

    box = structured_box(6, 6 * 6.6, "quad", MPI.COMM_SELF)
    m = TensorialModel.build(box, N=8, backend="propagator")
    st = m.new_state(realization_rng(2, 0))
    init_protocol_state(m, st, 0.0)
    E = np.zeros(3)
    for sg, alpha in ((Stage("a", "load", 0.0, "strain", gamma=0.3, dgamma=1e-3), 0.0),
                      (Stage("b", "load", 30.0, "stress", stress=0.2), 30.0),
                      (Stage("c", "load", 90.0, "strain", gamma=0.1, dgamma=1e-3), 90.0)):
        ro = (StrainStage(m, st, sg, alpha) if sg.control == "strain"
              else StressStage(m, st, sg, alpha, sg.stress))
        ro.run(lambda: None)
        g = ro.gamma_final
        fe = m.fe_stress(st, g, np.deg2rad(alpha))  # sigma0 holds the folded earlier loads
        np.testing.assert_allclose(m.total_stress(st, g, np.deg2rad(alpha)), fe, atol=1e-9)
        before = m.total_stress(st, g, np.deg2rad(alpha))
        fold(m, st, g, alpha)
        np.testing.assert_allclose(m.total_stress(st, 0.0, 0.0), before, atol=1e-12)
        from femplast.fe.elasticity import M_vector
        E += g * M_vector(np.deg2rad(alpha))
    np.testing.assert_allclose(st.E_macro, E)


def test_hold_stage_event_log_has_the_thermal_slips(tmp_path):
    """A thermal hold logs every event: each avalanche opens with its thermal slip
    (relaxation step 0), and the log length is the stage's event count."""
    stages = [dict(name="load", gamma=0.1),
              dict(name="hold", kind="hold", temperature=0.3, events=150)]
    case = case_from_dict(dict(BASE, stages=stages, run=dict(realizations=1, seed=2)))
    out = tmp_path / "out"
    run_case(case, out, MPI.COMM_SELF, quiet=True, event_log=True)
    with h5py.File(out / "stages" / "hold" / "realizations" / "r0000.h5") as f:
        ev = {k: f["events"][k][()] for k in f["events"]}
        size, av_step = f["avalanches/size"][()], f["avalanches/step"][()]
        num_events = int(f.attrs["num_events"])
    assert len(ev["cell"]) == num_events == size.sum()
    assert np.sum(ev["relaxation_step"] == 0) == len(size) == 150
    first = np.r_[0, np.cumsum(size)[:-1]]  # each avalanche's first logged event
    assert np.all(ev["relaxation_step"][first] == 0)
    assert np.array_equal(ev["step"][first], av_step)
    assert np.all(ev["d_gamma"] >= 0) and np.all(ev["self_response"] < 0)
    assert (size > 1).any()  # some thermal slips trigger athermal events


def test_stage_snapshots_and_event_log(tmp_path):
    """Two stages with snapshots: XDMF series meshio reads (snapshots + final state), equal to
    the stage's final state; --event-log: an events group per stage."""
    import meshio

    stages = [dict(name="load", gamma=0.2, snapshots=[0.0, 0.05, 0.2]),
              dict(name="reverse", alpha_ext=90, stress=0.2, gamma=0.3)]
    case = case_from_dict(dict(BASE, stages=stages, run=dict(realizations=2, seed=4)))
    out = tmp_path / "out"
    run_case(case, out, MPI.COMM_SELF, quiet=True, event_log=True)
    names = {"sigma_xx", "sigma_yy", "sigma_xy", "sigma_vm", "pressure", "eps_pl_xx",
             "eps_pl_yy", "eps_pl_xy", "dtau_c_min", "tau_c_min", "tau_c_mean"}
    nsteps = {}
    for name, times in (("load", [0.0, 0.05, 0.2]), ("reverse", None)):
        for r in (0, 1):
            xdmf = out / "stages" / name / "fields" / f"r000{r}.xdmf"
            with h5py.File(out / "stages" / name / "realizations" / f"r000{r}.h5") as f:
                state_stress, state_epl = f["state/stress"][()], f["state/eps_pl"][()]
                g_final = f["state"].attrs["gamma_ext"]
                size = f["avalanches/size"][()]
                ev = {k: f["events"][k][()] for k in f["events"]}
                av_step = f["avalanches/step"][()]
            with meshio.xdmf.TimeSeriesReader(xdmf) as rd:
                points, cells = rd.read_points_cells()
                assert cells[0].type == "quad" and len(cells[0].data) == 64
                steps = [rd.read_data(k) for k in range(rd.num_steps)]
            t = [x[0] for x in steps]
            assert t == (times if times is not None else [g_final])
            nsteps[name] = len(t)
            for _, _, cd in steps:
                assert set(cd) == names
                assert all(np.isfinite(v[0]).all() and len(v[0]) == 64 for v in cd.values())
            last = steps[-1][2]
            np.testing.assert_array_equal(last["sigma_xy"][0], state_stress[:, 2])
            np.testing.assert_array_equal(last["eps_pl_xy"][0], state_epl[:, 2])
            assert sorted(ev) == ["box_stress", "cell", "d_gamma", "relaxation_step",
                                  "self_response", "step", "tau", "tau_c", "theta"]
            assert np.all(ev["tau"] >= ev["tau_c"] - 1e-9)  # athermal slips: active systems
            assert len(ev["cell"]) == size.sum() > 0
            assert set(ev["step"]) == set(av_step)  # events point at their avalanche
    assert not list(out.rglob(".partial*"))
    print(f"\nstage fields: load {nsteps['load']} steps, reverse {nsteps['reverse']} (final)")


@pytest.mark.parametrize("stages, key", [
    ([dict(name="a")], "stages[0].gamma"),
    ([dict(name="a", gamma=0.1), dict(name="b", start="zz", gamma=0.1)], "stages[1].start"),
    ([dict(name="a", gamma=0.1), dict(name="a", gamma=0.1)], "stages[1].name"),
    ([dict(name="a b", gamma=0.1)], "stages[0].name"),
    ([dict(name="u", kind="unload", stress=1.0)], "stages[0].stress"),
    ([dict(name="h", kind="hold", temperature=0.3)], "stages[0].events"),
    ([dict(name="a", stress=0.3, snapshots=[0.1])], "stages[0].snapshots"),
    ([dict(name="a", gamma=0.1, snapshots=[-0.2])], "stages[0].snapshots[0]"),
])
def test_bad_stage_lists(stages, key):
    with pytest.raises(FemplastInputError) as e:
        case_from_dict(dict(BASE, stages=stages))
    assert e.value.key == key


def test_output_snapshots_need_stage_snapshots_with_stages():
    with pytest.raises(FemplastInputError) as e:
        case_from_dict(dict(BASE, stages=[dict(name="a", gamma=0.1)],
                            output=dict(snapshots=[0.05])))
    assert e.value.key == "output.snapshots"
