"""Post-processing: figures, renders, animation and index for the quickstart run; every other
figure family on synthetic data in the documented formats; the ParaView time series."""

from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
from PIL import Image

from femplast.app.cli import main as cli_main
from femplast.postprocess import NoRunError, load_run, plot_run
from femplast.postprocess.figures import fit_parabola
from femplast.postprocess.renders import animation_job, plastic_strain_frames

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_FIELDS = {"sigma_xx", "sigma_yy", "sigma_xy", "sigma_vm", "pressure", "eps_pl_xx",
                     "eps_pl_yy", "eps_pl_xy", "dtau_c_min", "tau_c_min", "tau_c_mean"}
SNAPSHOTS = [0.1, 0.5, 1.0]
MIN_VARIANCE = 2e-3  # an all-white or single-colour image has ~0


def pixel_variance(path: Path) -> float:
    img = mpimg.imread(path)
    return float(np.asarray(img, float)[..., :3].var())


def assert_units(*paths: Path) -> int:
    """Every dataset of the HDF5 files has a known ``units`` attribute; returns how many."""
    from femplast.io.output import DATASET_UNITS

    seen = []

    def check(name, obj):
        if isinstance(obj, h5py.Dataset):
            u = obj.attrs.get("units")
            assert u is not None and u != "unknown", (name, u)
            # field files (meshio): datasets data0, data1, ... carry their field's name
            assert u == DATASET_UNITS[obj.attrs.get("name", name.split("/")[-1])]
            seen.append(name)

    for p in paths:
        with h5py.File(p) as f:
            f.visititems(check)
    return len(seen)


def gif_frames(path: Path) -> list[np.ndarray]:
    im = Image.open(path)
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB"), float) / 255)
    return out


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    assert cli_main([str(ROOT / "cases" / "quickstart.yaml"), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def quickstart_plots(quickstart):
    entries, failures, index = plot_run(quickstart, quiet=True, strict=True)
    return entries, failures, index


def test_quickstart_figures_not_blank(quickstart, quickstart_plots):
    entries, failures, index = quickstart_plots
    assert failures == []
    figdir = quickstart / "figures"
    figs = {e.path.stem for e in entries if e.kind == "figure"}
    assert figs == {"stress_strain", "densities", "avalanche_sizes", "rms_deviation",
                    "plastic_activity", "localization_loc", "localization_band_profile",
                    "localization_band_field"}
    renders = [e.path for e in entries if e.kind == "render"]
    # the first realization's XDMF: one render per field, each with a panel per snapshot
    assert {p.stem for p in renders} == {f"r0000_{k}" for k in QUICKSTART_FIELDS}
    assert sorted(p.name for p in figdir.glob("*.png")) == sorted(f"{f}.png" for f in figs)
    for p in [e.path for e in entries if e.kind != "animation"]:
        assert p.is_file()
        v = pixel_variance(p)
        assert v > MIN_VARIANCE, (p.name, v)
    w, h = Image.open(figdir / "renders" / "r0000_eps_pl_xy.png").size
    assert w > 2.5 * h  # three snapshot panels side by side (+ colour bar)
    # animation from the snapshots (no event log): one frame per snapshot (+ held last frame)
    (gif,) = [e.path for e in entries if e.kind == "animation"]
    frames = gif_frames(gif)
    assert len(frames) >= len(SNAPSHOTS)
    assert np.abs(frames[len(SNAPSHOTS) - 1] - frames[0]).mean() > 0.01  # eps_pl grows
    # index pages link every file, with relative links that resolve
    html = index.read_text()
    md = (figdir / "index.md").read_text()
    for e in entries:
        rel = e.path.relative_to(figdir).as_posix()
        assert f"src='{rel}'" in html and f"]({rel})" in md
    assert "../fields/r0000.xdmf" in html
    assert (figdir / "../fields/r0000.xdmf").resolve().is_file()


def test_quickstart_timeseries_open_in_meshio_and_pyvista(quickstart):
    import meshio
    import pyvista as pv

    xdmfs = sorted((quickstart / "fields").glob("*.xdmf"))
    assert len(xdmfs) == 4  # one per realization
    with meshio.xdmf.TimeSeriesReader(str(xdmfs[0])) as rd:
        points, cells = rd.read_points_cells()
        assert rd.num_steps == len(SNAPSHOTS)
        assert cells[0].type == "quad" and len(cells[0].data) == 64 and len(points) == 81
        for i, t in enumerate(SNAPSHOTS):
            tt, _, cd = rd.read_data(i)
            assert tt == pytest.approx(t)
            assert set(cd) == QUICKSTART_FIELDS
            assert all(len(v[0]) == 64 for v in cd.values())
    reader = pv.get_reader(str(xdmfs[0]))
    assert reader.time_values == pytest.approx(SNAPSHOTS)
    reader.set_active_time_value(SNAPSHOTS[-1])
    mesh = reader.read()["fields"]  # blocks: the time series, the mesh (for dolfinx)
    assert mesh.n_cells == 64
    assert set(mesh.cell_data.keys()) == QUICKSTART_FIELDS
    # the last snapshot is the final state of the realization file
    with h5py.File(quickstart / "realizations" / "r0000.h5") as f:
        np.testing.assert_allclose(mesh.cell_data["eps_pl_xy"], f["state/eps_pl"][:, 2])
        assert f["steps/stress"].attrs["units"] == "epsilon_SL/sigma_SL^2"
        assert f["state/theta"].attrs["units"] == "rad"
    assert assert_units(*(quickstart / "realizations").glob("*.h5"),
                        *(quickstart / "fields").glob("*.h5")) > 50


def test_results_tables(quickstart):
    from femplast.app.api import load_run as api_load_run

    res = api_load_run(quickstart)
    t = res.table("steps")
    n = [len(r.gamma) for r in res.realizations]
    assert len(t["gamma_ext"]) == sum(n) and set(t["realization"]) == {0, 1, 2, 3}
    with h5py.File(quickstart / "realizations" / "r0002.h5") as f:
        m = t["realization"] == 2
        np.testing.assert_array_equal(t["stress_xy"][m], f["steps/stress"][:, 2])
        np.testing.assert_array_equal(t["eps_pl_xx"][m], f["steps/eps_pl"][:, 0])
    av = res.table("avalanches")
    assert len(av["size"]) == sum(len(a["size"]) for a in res.avalanches)
    from femplast.errors import FemplastInputError

    with pytest.raises(FemplastInputError):
        res.table("fields")
    pd = pytest.importorskip("pandas")
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == sum(n)


def test_cli_plot_subcommand_and_no_run_error(quickstart, tmp_path, capsys):
    figdir = tmp_path / "figs"
    assert cli_main(["plot", str(quickstart), "--out", str(figdir), "--quiet",
                     "--no-renders", "--formats", "png,pdf"]) == 0
    assert len(list(figdir.glob("*.png"))) == 8 and len(list(figdir.glob("*.pdf"))) == 8
    assert not (figdir / "renders").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert cli_main(["plot", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "holds no femplast run" in err and "realizations/rNNNN.h5" in err
    assert cli_main(["plot", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(NoRunError):
        load_run(empty)


def test_event_log_animation_rebuilds_plastic_strain(tmp_path):
    out = tmp_path / "run"
    assert cli_main([str(ROOT / "cases" / "quickstart.yaml"), "--out", str(out), "--quiet",
                     "--event-log", "--realizations", "1", "--set",
                     "loading.gamma_max=0.2", "--set", "loading.stationary_from=0.1", "--set",
                     "output.snapshots=[0.2]"]) == 0
    run = load_run(out)
    assert assert_units(out / "realizations" / "r0000.h5")  # incl. the events/ datasets
    r = run.realizations[0]
    k_end = len(r.gamma) - 1
    vals = plastic_strain_frames(r.events, 64, np.array([k_end // 2, k_end]), 0.0)
    with h5py.File(out / "realizations" / "r0000.h5") as f:
        np.testing.assert_allclose(vals[-1], f["state/eps_pl"][:, 2], atol=1e-12)
        mean_half = f["steps/eps_pl"][k_end // 2, 2]
    assert vals[0].mean() == pytest.approx(mean_half, abs=1e-12)  # uniform cells: plain mean
    entry = animation_job(run, tmp_path / "renders")
    assert entry.kind == "animation" and "event log" in entry.caption
    frames = gif_frames(entry.path)
    assert len(frames) >= 40  # rebuilt at 48 strains, not only the one snapshot
    assert np.abs(frames[-1] - frames[0]).mean() > 0.01


# ----------------------------------------------------------------------------- synthetic data
def write_steps(path: Path, gamma, stress, alpha_ext=0.0, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group("steps")
        g["gamma_ext"] = gamma
        g["stress"] = stress
        for k, v in extra.items():
            g[k] = v
        f.create_group("state").attrs["alpha_ext"] = alpha_ext


def test_patch_figures_from_rows(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        rows = dict(state=[], R=[], alpha_deg=[])
        for state, R, a in [(s, R, a) for s in ("quench", "stationary") for R in (3.7, 7.4, 15.0)
                            for a in (0, 45, 90, 135)]:
            rows["state"] += [state] * 20
            rows["R"] += [R] * 20
            rows["alpha_deg"] += [a] * 20
        n = len(rows["R"])
        (tmp_path / "patches").mkdir(exist_ok=True)
        with h5py.File(tmp_path / "patches" / f"r{i:04d}.h5", "w") as f:
            f["state"] = np.array(rows["state"], dtype="S")
            f["R"] = rows["R"]
            f["alpha_deg"] = rows["alpha_deg"]
            tau_c = 1.0 + 0.3 * np.cos(np.deg2rad(2 * np.array(rows["alpha_deg"]))) \
                + 0.1 * rng.standard_normal(n)
            f["tau_c"] = tau_c
            f["tau_i"] = 0.5 * rng.standard_normal(n)
            f["dtau_c"] = tau_c - f["tau_i"][:]
            f["delta_tau_c"] = 0.2 * tau_c
            f["sigma_vm"] = np.abs(rng.standard_normal(n))
    run = load_run(tmp_path)
    assert run.families() == ["patches"]
    assert len(run.patches["R"]) == 2 * 2 * 3 * 4 * 20
    entries, failures, _ = plot_run(tmp_path, quiet=True, strict=True)
    assert {e.path.stem for e in entries} == {"patches_densities", "patches_mean",
                                              "patches_std", "patches_drop_vs_yield"}
    for e in entries:
        assert pixel_variance(e.path) > MIN_VARIANCE
    (d,) = [e for e in entries if e.path.stem == "patches_densities"]
    assert "R = 3.7, 7.4, 15" in d.caption and "state quench" in d.caption


def test_patch_figures_from_summary_only(tmp_path):
    import json

    # the nested layout femplast.analysis.patches writes ({q: {mean, std}}, 'alpha', 'von_mises')
    rows = [dict(state=s, R=R, alpha=a, size=f"n{R}", count=10,
                 **{q: dict(mean=1.0 + 0.01 * R + 0.001 * a, std=0.1)
                    for q in ("tau_i", "tau_c", "dtau_c", "delta_tau_c", "von_mises")})
            for s in ("quench", "stationary") for R in (3, 6) for a in (0, 90)]
    (tmp_path / "summary.json").write_text(json.dumps({"patches": rows}))
    run = load_run(tmp_path)
    assert len(run.patch_rows) == 8 and run.patch_rows[0]["sigma_vm_mean"] == pytest.approx(1.03)
    assert run.patch_rows[-1]["alpha_deg"] == 90.0
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True)
    assert {e.path.stem for e in entries} == {"patches_mean", "patches_std",
                                              "patches_drop_vs_yield"}


def test_calibration_parabola_and_landscape(tmp_path):
    rng = np.random.default_rng(1)
    lines = ["k,lambda,chi,L_macro,L_meso_plus,L_meso_minus,L_stat"]
    for k in np.round(np.arange(1.0, 3.01, 0.1), 2):
        for lam in (1.8, 2.0, 2.2):
            for chi in (2.0, 2.25, 2.5):
                Ls = 0.16 + 0.4 * (k - 2.18) ** 2 + 0.05 * abs(lam - 2.0) + 0.05 * abs(chi - 2.25)
                Ls += 0.002 * rng.standard_normal()
                lines.append(f"{k},{lam},{chi},{0.1 + 0.01 * rng.random()},{Ls / 2},{Ls * 1.5},"
                             f"{Ls}")
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "sweep.csv").write_text("\n".join(lines) + "\n")
    run = load_run(tmp_path)
    assert run.families() == ["calibration"]
    best_k = np.unique(run.calibration["k"])
    fit = fit_parabola(best_k, 0.16 + 0.4 * (best_k - 2.18) ** 2)
    assert fit[0] == pytest.approx(2.18, abs=1e-9)
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True)
    (e,) = entries
    assert e.path.name == "calibration.png" and pixel_variance(e.path) > MIN_VARIANCE
    k_hat = float(e.caption.split("k_hat = ")[1].split(",")[0])
    assert k_hat == pytest.approx(2.18, abs=0.05)
    assert "lambda_hat = 2," in e.caption and "chi_hat = 2.25" in e.caption


def test_sweep_without_errors_plots_its_observables(tmp_path):
    # sweep.errors: [] leaves the L_* columns NaN: the observables are drawn instead of a
    # calibration figure (which used to fail on an empty reduction)
    lines = ["point,k,chi,L_macro,L_stat,sigma_xy_mean,sigma_xy_std_err,drop_xy_mean,"
             "slip_events_per_unit_strain"]
    for i, (k, chi) in enumerate([(2.0, 2.0), (2.2, 2.0), (2.0, 2.5), (2.2, 2.5)]):
        lines.append(f"{i},{k},{chi},nan,nan,{0.4 + 0.1 * k},0.01,0.07,{800 + 10 * i}")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "table.csv").write_text("\n".join(lines) + "\n")
    assert load_run(tmp_path).families() == ["calibration"]
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True)
    (e,) = entries
    assert e.path.name == "sweep_observables.png" and pixel_variance(e.path) > MIN_VARIANCE
    assert "(k, chi)" in e.caption


@pytest.mark.parametrize("measure, name", [(None, "external stress"),
                                            ("drive", "grip force / area")])
def test_scalar_sweep_table_plots_its_observables(measure, name, tmp_path):
    # a scalar sweep's own table (no k, no L_* columns) is found and drawn; the stresses are
    # labelled in the measure summary.json names (a specimen: its grip force per area)
    import json

    from femplast.postprocess import style as S

    lines = ["# femplast sweep table", "point,scalar.c0,scalar.thresholds.scale,flow_stress,"
             "flow_stress_err,peak_stress,peak_stress_err,loc_max,realizations"]
    for i, (c0, sc) in enumerate([(0.02, 1.4), (0.02, 2.0), (0.03, 1.4), (0.03, 2.0)]):
        lines.append(f"{i},{c0},{sc},{1.0 - 10 * c0},0.01,{sc},0.02,{1 + i},2")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "table.csv").write_text("\n".join(lines) + "\n")
    sw = {"grid_points": 4} if measure is None else {"stress_measure": measure}
    (tmp_path / "summary.json").write_text(json.dumps({"sweep": sw}))
    assert load_run(tmp_path).families() == ["calibration"]
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True)
    (e,) = entries
    assert e.path.name == "sweep_observables.png" and pixel_variance(e.path) > MIN_VARIANCE
    assert "(scalar.c0, scalar.thresholds.scale)" in e.caption
    assert ("grip force / area" in e.caption) == (measure is not None)
    assert S.STRESS_NAMES[measure] == name


def test_bauschinger_scalar_and_finite_size(tmp_path):
    import json

    g = np.linspace(0, 0.2, 2001)
    for stage, a, tau_y in (("reload_0", 0.0, 0.6), ("reverse_90", 90.0, 0.3)):
        for i in range(3):
            s = np.minimum(13.2 * g, tau_y + 0.5 * g) + 0.01 * i
            st = np.zeros((len(g), 3))
            # resolved on alpha_ext: cos(2a) S_xy + sin(2a) (S_yy - S_xx) / 2
            st[:, 2] = s if a == 0 else -s
            write_steps(tmp_path / "stages" / stage / "realizations" / f"r{i:04d}.h5", g, st, a)
    gs = np.sort(np.random.default_rng(2).uniform(0, 1, 400))  # one row per avalanche
    for i in range(2):
        write_steps(tmp_path / "realizations" / f"r{i:04d}.h5", gs, np.tanh(5 * gs),
                    LOC=0.1 + 0.5 * gs * np.exp(-gs), plastic_strain_variance=gs ** 2,
                    mean_threshold=1 - 0.3 * gs, internal_stress_std=0.2 + 0 * gs,
                    stress_before=np.tanh(5 * gs) + 0.01, size=np.ones(400, int))
    L = np.array([20.0, 40.0, 80.0, 160.0])
    (tmp_path / "summary.json").write_text(json.dumps(
        {"finite_size": {"L": L.tolist(), "std_sigma_xy": (3 * L ** -0.94).tolist()}}))
    run = load_run(tmp_path)
    assert run.families() == ["realizations", "stages", "finite_size"]
    ga, va = run.stages["reverse_90"][0].gamma, run.stages["reverse_90"][0].resolved()
    assert va[-1] == pytest.approx(0.3 + 0.5 * ga[-1])  # resolved stress is positive
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True)
    names = {e.path.stem for e in entries}
    assert {"bauschinger", "scalar_evolution", "finite_size", "stress_strain",
            "densities"} <= names
    (fs,) = [e for e in entries if e.path.stem == "finite_size"]
    assert "exponent -0.940" in fs.caption
    for e in entries:
        assert pixel_variance(e.path) > MIN_VARIANCE, e.path.name


# ----------------------------------------------------------------------------- real outputs
def test_patch_tables_of_a_real_run_match_its_summary(tmp_path):
    from femplast.postprocess import figures

    out = tmp_path / "run"
    assert cli_main([str(ROOT / "cases" / "patches_small.yaml"), "--out", str(out),
                     "--quiet"]) == 0
    run = load_run(out)
    rows = {(r["state"], round(r["R"], 9), r["alpha_deg"]): r for r in figures.patch_table(run)}
    entries = run.summary["patches"]["entries"]
    assert len(entries) == len(rows) > 0  # every (state, size, alpha), 'stationary' pooled
    for e in entries:
        r = rows[(e["state"], round(e["R"], 9), e["alpha"])]
        assert r["n"] == e["count"]
        for q, name in (("tau_c", "tau_c"), ("delta_tau_c", "delta_tau_c"),
                        ("von_mises", "sigma_vm")):
            assert r[f"{name}_mean"] == pytest.approx(e[q]["mean"], abs=1e-12)
            assert r[f"{name}_std"] == pytest.approx(e[q]["std"], abs=1e-9)
    assert assert_units(*(out / "patches").glob("*.h5"), *(out / "realizations").glob("*.h5"))
    (entry,) = figures.patches_std(run, figures.Saver(tmp_path / "figs"))
    # single probes (gamma_ext=...) folded into 'stationary', shown next to the quench state
    assert "state stationary at R" in entry.caption and "state initial" in entry.caption
    assert "gamma_ext=" not in entry.caption
    assert pixel_variance(entry.path) > MIN_VARIANCE


def test_scalar_run_figures(tmp_path):
    from femplast.postprocess import figures

    out = tmp_path / "run"
    assert cli_main([str(ROOT / "cases" / "scalar_esl_soft.yaml"), "--out", str(out), "--quiet",
                     "--realizations", "2", "--set", "scalar.fit.flow_stress=null",
                     "--set", "output.fields=false"]) == 0
    run = load_run(out)
    assert assert_units(*(out / "realizations").glob("*.h5"))
    r = run.realizations[0]
    assert not r.uniform_steps and not r.tensorial
    g, s = r.curve()  # saw-tooth: loading peak then post-avalanche stress at each row
    assert len(g) == 2 * len(r.gamma) and (s[::2] >= s[1::2] - 1e-12).all()
    assert [fn.__name__ for fn in figures.FIGURES if figures.applies(fn, run)] == [
        "stress_strain", "macro_densities", "avalanche_sizes", "scalar_evolution",
        "localization"]
    saver = figures.Saver(tmp_path / "figs")
    (e,) = figures.scalar_evolution(run, saver)
    assert all(k in e.caption for k in ("LOC", "plastic_strain_variance", "mean_threshold",
                                        "internal_stress_std"))
    (d,) = figures.macro_densities(run, saver)
    # extremal dynamics has no fixed loading step; the rise between avalanches is defined
    assert "stress increments between avalanches" in d.caption
    av = r.avalanche_stress()
    assert av is not None and (av[1][1:] - av[2][:-1] > 0).all()  # the load only rises
    for p in (e.path, d.path):
        assert pixel_variance(p) > MIN_VARIANCE


def test_comparison_overlays_the_localization_of_runs(tmp_path):
    """plot RUN1 RUN2 --labels: LOC(gamma) of both runs on one figure, one band each."""
    from femplast.postprocess import compare, figures

    runs = []
    for name, c0 in (("soft", "0.04"), ("hard", "0.02")):
        out = tmp_path / name
        assert cli_main([str(ROOT / "cases" / "scalar_esl_soft.yaml"), "--out", str(out),
                         "--quiet", "--realizations", "2", "--set", "scalar.fit.flow_stress=null",
                         "--set", f"scalar.c0={c0}", "--set", "output.fields=false",
                         "--set", "loading.gamma_max=0.3",
                         "--set", "loading.stationary_from=0.2"]) == 0
        runs.append(load_run(out))
    entries, failures = compare.compare_runs(runs, ["soft", "hard"],
                                             figures.Saver(tmp_path / "cmp"))
    assert not failures
    (loc,) = [e for e in entries if e.path.stem == "compare_localization"]
    assert "confidence band" in loc.caption and pixel_variance(loc.path) > MIN_VARIANCE
    a, b = (np.array(r.summary["localization"]["loc"]["mean"], float) for r in runs)
    assert a.shape == b.shape and not np.allclose(a, b, equal_nan=True)


def test_quench_run_plots_its_kmc_record_and_fields(tmp_path):
    """A quench output (no realizations/) is a run: its KMC record and quenched fields plot."""
    import h5py

    from femplast.postprocess import figures

    out = tmp_path / "q"
    assert cli_main([str(ROOT / "cases" / "quench_kmc.yaml"), "--out", str(out), "--quiet",
                     "--realizations", "2", "--set", "mesh.n=6", "--set", "slip.N=8",
                     "--set", "kmc.max_events=400", "--set", "kmc.stop=max_events"]) == 0
    run = load_run(out)
    assert run.families() == ["fields", "quench"] and len(run.quench) == 2
    with h5py.File(out / "quench" / "r0001.h5", "r") as f:
        np.testing.assert_array_equal(run.quench[1]["sample_mean_tau_c"],
                                      f["kmc/sample_mean_tau_c"][()])
    assert run.quench[1]["sample_event"][-1] > 0
    assert [fn.__name__ for fn in figures.FIGURES if figures.applies(fn, run)] == ["quench"]
    (e,) = figures.quench(run, figures.Saver(tmp_path / "figs"))
    assert "2 realization(s)" in e.caption and pixel_variance(e.path) > MIN_VARIANCE
    assert plot_run(out, quiet=True) is not None
    assert (out / "figures" / "quench.png").is_file()


# ----------------------------------------------------------------------------- talk figures
def _bauschinger_dir(root: Path, G=13.2, tau_f=0.5, tau_r=0.2, h=0.5):
    """Synthetic Bauschinger output: load to a plateau, unload along 90 deg to zero stress,
    reload forward (yield at tau_f) and reverse (yield at tau_r), bilinear branches."""
    import json

    def branch(stage, alpha, g, s_resolved):
        st = np.zeros((len(g), 3))
        st[:, 2] = s_resolved if alpha == 0 else -s_resolved  # resolved on alpha_ext
        for i in range(2):
            write_steps(root / "stages" / stage / "realizations" / f"r{i:04d}.h5", g,
                        st + 1e-3 * i, alpha)

    g = np.linspace(0, 0.2, 2001)
    branch("load", 0.0, g, np.minimum(G * g, 0.5))
    gu = np.linspace(0, 0.5 / G, 200)
    branch("unload", 90.0, gu, -0.5 + G * gu)
    gr = np.linspace(0, 0.1, 1001)
    branch("forward", 0.0, gr, np.minimum(G * gr, tau_f + h * gr))
    branch("reverse", 90.0, gr, np.minimum(G * gr, tau_r + h * gr))
    stages = [dict(name="load", start=None), dict(name="unload", kind="unload", start=None),
              dict(name="forward", start="unload"), dict(name="reverse", start="unload")]
    (root / "summary.json").write_text(json.dumps(
        {"case": {"name": "b", "elasticity": {"G": G}, "stages": stages}}))
    # offset yield stress: plastic strain g - s/G = 2e-3 on the hardening line s = tau + h g
    return lambda tau: tau + h * (2e-3 + tau / G) / (1 - h / G)


def test_bauschinger_two_panels_mark_the_reverse_yield_stress(tmp_path):
    from femplast.postprocess import figures

    expected = _bauschinger_dir(tmp_path)
    run = load_run(tmp_path)
    assert figures.reload_stages(run) == ["forward", "reverse"]
    ys = figures.reload_yield(run)
    # the mean curve of the two realizations (stored Sigma_xy + 0, + 1e-3) is the bilinear
    # branch shifted by +0.5e-3 resolved on 0 deg, -0.5e-3 on 90 deg (Sigma_90 = -Sigma_xy)
    assert ys["reverse"]["yield_point"][1] == pytest.approx(expected(0.2 - 5e-4), abs=1e-5)
    assert ys["forward"]["yield_point"][1] == pytest.approx(expected(0.5 + 5e-4), abs=1e-5)
    curves, a0 = figures._protocol_curves(run)
    ends = {n: (x[-1], m[-1]) for n, x, m, _, _ in curves}
    assert a0 == 0.0
    assert ends["unload"][0] == pytest.approx(0.2 - 0.5 / 13.2)  # unloading strains back
    assert ends["reverse"][0] == pytest.approx(ends["unload"][0] - 0.1)  # reverse: backward
    assert ends["reverse"][1] < -0.2 < 0.5 < ends["forward"][1]  # ... and negative stress
    (e,) = figures.bauschinger(run, figures.Saver(tmp_path / "figs"))
    sy = float(e.caption.split("reverse: yield stress ")[1].split(" ")[0])
    assert sy == pytest.approx(ys["reverse"]["yield_point"][1], rel=1e-4)
    assert pixel_variance(e.path) > MIN_VARIANCE
    w, h = Image.open(e.path).size
    assert w > 2 * h  # two panels side by side


def test_stress_strain_marks_peak_and_flow_stress(tmp_path):
    import json

    g = np.linspace(0, 1, 10001)
    s = np.minimum(13.2 * g, 0.5 + 0.3 * np.exp(-((g - 0.1) / 0.03) ** 2))
    for i in range(3):
        st = np.zeros((len(g), 3))
        st[:, 2] = s + 0.01 * (i - 1)
        write_steps(tmp_path / "realizations" / f"r{i:04d}.h5", g, st)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"case": {"loading": {"stationary_from": 0.4}}}))
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True, renders_on=False)
    (e,) = [x for x in entries if x.path.stem == "stress_strain"]
    peak = float(e.caption.split("peak stress ")[1].split(" ")[0])
    flow = float(e.caption.split("flow stress ")[1].split(" ")[0])
    assert peak == pytest.approx(s.max(), rel=1e-3) and peak > 0.75
    assert flow == pytest.approx(0.5, rel=1e-3)


def test_avalanche_size_density_reports_the_mle_exponent(tmp_path):
    rng = np.random.default_rng(4)
    g = np.linspace(0, 1, 1001)
    for i in range(2):
        st = np.zeros((len(g), 3))
        st[:, 2] = np.minimum(13.2 * g, 0.5)
        write_steps(tmp_path / "realizations" / f"r{i:04d}.h5", g, st)
        with h5py.File(tmp_path / "realizations" / f"r{i:04d}.h5", "a") as f:
            f["avalanches/gamma_ext"] = np.sort(rng.uniform(0.6, 1.0, 3000))
            f["avalanches/size"] = rng.zipf(1.8, 3000)
            f["avalanches/drop_xy"] = rng.exponential(0.01, 3000)
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True, renders_on=False)
    (e,) = [x for x in entries if x.path.stem == "avalanche_sizes"]
    tau = float(e.caption.split("tau = ")[1].split(" ")[0])
    lo, hi = (float(v) for v in e.caption.split("interval ")[1].split(")")[0].split(" .. "))
    assert lo < 1.8 < hi and lo < tau < hi
    assert pixel_variance(e.path) > MIN_VARIANCE


def test_finite_size_exponent_is_the_one_of_summary(tmp_path):
    import json

    from femplast.analysis.calibration import finite_size_fit

    L = np.array([39.5, 59.3, 79.0, 98.8])
    sd = np.array([0.055, 0.036, 0.028, 0.021])
    err = np.array([0.002, 0.004, 0.001, 0.003])
    fit = finite_size_fit(L, sd, err)  # what app/sweep.py writes into summary.json
    unweighted = np.polyfit(np.log(L), np.log(sd), 1)[0]
    assert abs(unweighted - fit["exponent"]) > 5e-3  # the figure used to refit unweighted
    (tmp_path / "summary.json").write_text(json.dumps({"finite_size": dict(
        L=L.tolist(), std_sigma_xy=sd.tolist(), std_sigma_xy_err=err.tolist(), **fit)}))
    entries, _, _ = plot_run(tmp_path, quiet=True, strict=True)
    (e,) = entries
    run = load_run(tmp_path)
    a = run.finite_size["exponent"]
    assert f"exponent {a:.3f} +- {run.finite_size['exponent_err']:.3f}" in e.caption
    assert "weighted" in e.caption and "error bars" in e.caption


def test_reference_overlays_and_comparison_of_runs(tmp_path, capsys):
    import json

    ref = ROOT / "reference" / "synthetic_l6.6"
    rng = np.random.default_rng(8)
    g = np.arange(0, 1.0001, 1e-3)
    for name, level in (("on", 0.55), ("off", 0.45)):
        for i in range(2):
            st = np.zeros((len(g), 3))
            st[:, 2] = np.minimum(13.2 * g, level) + 0.02 * rng.standard_normal(len(g))
            write_steps(tmp_path / name / "realizations" / f"r{i:04d}.h5", g, st)
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"case": {"loading": {"stationary_from": 0.5}, "sweep": {"reference": str(ref)}}}))
    run = load_run(tmp_path / "on")
    assert run.reference_path == ref and run.reference.synthetic
    entries, _, _ = plot_run(tmp_path / "on", quiet=True, strict=True)
    caps = {e.path.stem: e.caption for e in entries}
    assert "reference synthetic_l6.6" in caps["densities"]
    assert "reference synthetic_l6.6" in caps["rms_deviation"]
    assert cli_main(["plot", str(tmp_path / "on"), "--reference", str(tmp_path)]) == 2
    assert "not a reference directory" in capsys.readouterr().err
    out = tmp_path / "cmp"
    assert cli_main(["plot", str(tmp_path / "on"), str(tmp_path / "off"), "--labels",
                     "rejuvenation,none", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["compare_densities.png",
                                                         "compare_stress_strain.png"]
    md = (out / "index.md").read_text()
    flows = [float(md.split(f"{lab}: peak ")[1].split("flow ")[1].split(" ")[0])
             for lab in ("rejuvenation", "none")]
    assert flows[0] == pytest.approx(0.55, abs=0.01) and flows[1] == pytest.approx(0.45,
                                                                                   abs=0.01)
    assert cli_main(["plot", str(tmp_path / "on"), str(tmp_path / "off"), "--labels",
                     "a"]) == 2


def test_render_labels_and_distinct_snapshots():
    from femplast.postprocess import style as S
    from femplast.postprocess.renders import distinct_times

    assert distinct_times([0.1, 0.5, 1.0, 1.0]) == [0, 1, 3]  # a repeated final state once
    for k in QUICKSTART_FIELDS | {"x", "tau_c", "sigma0_xy"}:
        lab = S.field_label(k)
        outside_math = "".join(lab.split("$")[::2])
        assert "$" in lab and "_" not in outside_math and lab != k, lab  # no raw names
    assert "[" in S.field_label("sigma_xy") and "[" not in S.field_label("eps_pl_xy")
    from femplast.postprocess.renders import color_range

    rng = np.random.default_rng(0)
    field = np.concatenate([0.01 * rng.standard_normal(4000), np.full(40, -0.1)])  # inclusion
    (lo, hi), cmap = color_range([field], robust=True)
    assert cmap == "RdBu_r" and 0.02 < hi < 0.04 and lo == -hi  # the 1 % inclusion clipped
    assert color_range([field])[0] == (-0.1, 0.1)  # not robust: the full range
    binary = np.concatenate([np.zeros(4000), np.full(40, 0.01)])  # the few cells are the field
    assert color_range([binary], robust=True)[0] == (0.0, 0.01)


def test_inclusion_against_analytic_eshelby_field(tmp_path):
    from femplast.postprocess import measures as M
    from femplast.postprocess.renders import inclusion_job, read_series

    out = tmp_path / "run"
    assert cli_main([str(ROOT / "cases" / "inclusion.yaml"), "--out", str(out), "--quiet"]) == 0
    run = load_run(out)
    e = inclusion_job(run, tmp_path / "figs")
    assert pixel_variance(e.path) > MIN_VARIANCE
    inside = float(e.caption.split("Inside: FE ")[1].split(",")[0])
    analytic = float(e.caption.split("Inside: FE ")[1].split("analytic ")[1].split(" ")[0])
    err = float(e.caption.split("relative L2 error ")[1].rstrip("."))
    assert inside == pytest.approx(run.summary["inclusion"]["mean_stress_inside"][2], rel=1e-4)
    assert analytic == pytest.approx(run.summary["inclusion"]["eshelby_circular_inside_xy"],
                                     rel=2e-2)  # the circle of the same area as the cells
    assert inside == pytest.approx(analytic, rel=1e-2)
    assert err < 0.12  # 64 x 64 cells, radius 3.2 cells: staircase interface
    # without the periodic images the far field is visibly worse
    pts, _, cells, _, data = read_series(run.xdmf[0])
    c = pts[cells][..., :2].mean(axis=1)
    L = float(pts[:, 0].max())
    iso = M.eshelby_circular_stress(c[:, 0] - L / 2, c[:, 1] - L / 2, 5.0, 0.01, 13.2, 59.0)
    far = np.hypot(c[:, 0] - L / 2, c[:, 1] - L / 2) > 10
    e_iso = np.linalg.norm(data[0]["sigma_xy"][far] - iso[far, 2]) / np.linalg.norm(iso[far, 2])
    assert e_iso > 1.5 * err


def test_plot_does_not_import_dolfinx(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "summary.json").write_text(json.dumps(
        {"finite_size": {"L": [20.0, 40.0], "std_sigma_xy": [0.1, 0.05]}}))
    code = ("import sys; from femplast.postprocess.plot import main; "
            f"assert main([{str(tmp_path)!r}, '--quiet', '--reference', "
            f"{str(ROOT / 'reference' / 'synthetic_l6.6')!r}]) == 0; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dolfinx', 'petsc4py')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "figures" / "finite_size.png").is_file()


class _LabelSaver:
    """Keeps each figure's axis labels instead of writing it."""

    def __init__(self):
        self.labels = {}

    def save(self, fig, name, caption):
        import matplotlib.pyplot as plt

        self.labels[name] = [(a.get_xlabel(), a.get_ylabel()) for a in fig.axes]
        plt.close(fig)


@pytest.mark.parametrize("extra,measure,symbol", [
    ({"nominal_stress": "s"}, "nominal stress", r"\sigma_{\rm nom}"),  # one grip
    ({"drive_stress": "s", "force": "s"}, "grip force / area", r"\Sigma_{\rm grip}"),  # walls
    ({"force": "s"}, "grip force / area", r"\Sigma_{\rm grip}"),  # scalar model, specimen
    ({}, None, None)])  # the periodic box: Sigma_xy
def test_specimen_stress_axes_name_their_stress(tmp_path, extra, measure, symbol):
    """Stress-strain curve and stationary densities (stress, drops, increments) of a
    specimen label the stress the run records (nominal stress of one grip, grip force per
    area), never Sigma_xy, and the strain as the grip displacement over H; the box keeps
    Sigma^ext_xy and the external strain."""
    import json

    from femplast.postprocess import figures as F

    g = np.linspace(0, 0.2, 2001)
    s = np.minimum(13.2 * g, 0.5) + 0.01 * np.sin(300 * g)
    st = np.zeros((len(g), 3))
    st[:, 2] = s
    extra = {k: s for k in extra}
    for i in range(2):
        write_steps(tmp_path / "realizations" / f"r{i:04d}.h5", g, st, **extra)
    (tmp_path / "summary.json").write_text(json.dumps(
        {"case": {"loading": {"stationary_from": 0.1}}}))
    run = load_run(tmp_path)
    saver = _LabelSaver()
    F.stress_strain(run, saver)
    F.macro_densities(run, saver)
    y = saver.labels["stress_strain"][0][1]
    strain = saver.labels["stress_strain"][0][0]
    xs = [x for x, _ in saver.labels["densities"]]
    assert len(xs) >= 2
    # the strain axis: the box's external strain, a specimen's grip displacement over H
    assert strain.startswith("external strain" if measure is None else "applied strain"), strain
    assert ("grip displacement" in strain) == (measure is not None), strain
    if measure is None:
        assert r"\Sigma^{\rm ext}_{xy}" in y and all(r"\Sigma^{\rm ext}_{xy}" in x for x in xs)
    else:
        assert y.startswith(measure) and xs[0].startswith(measure), (y, xs)
        assert all(symbol in x and "_{xy}" not in x for x in [y, *xs]), xs
        assert xs[1].startswith("stress drop")
