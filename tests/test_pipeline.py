"""The one realization pipeline (femplast.protocols.pipeline): combinations every run kind gets
from it — KMC quench + patch tests (serial == mpirun), patch tests at the end of any stage,
probes that do not perturb trajectories, a distributed sample with stages."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.app.cases import case_from_dict
from femplast.app.runner import run_case
from femplast.errors import FemplastInputError

MPIRUN = str(Path(sys.executable).parent / "mpirun")
BASE = dict(model="tensorial", mesh=dict(kind="quad", n=6, L=39.6), slip=dict(N=8),
            loading=dict(dgamma_ext=1e-4, gamma_max=0.3, stationary_from=0.15),
            output=dict(fields=False), run=dict(realizations=2, seed=5))
PATCHES = dict(enabled=True, n=[1, 2], alpha=[0, 90])
BAUSCHINGER = [dict(name="load", alpha_ext=0, gamma=0.3), dict(name="unload", kind="unload"),
               dict(name="forward", start="unload", alpha_ext=0, gamma=0.05),
               dict(name="reverse", start="unload", alpha_ext=90, gamma=0.05)]


def h5_arrays(path: Path) -> dict:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()])
                     if isinstance(v, h5py.Dataset) else None)
    return out


def assert_same_files(a: Path, b: Path, pattern: str, atol: float = 0.0):
    fa, fb = sorted(a.glob(pattern)), sorted(b.glob(pattern))
    assert [p.relative_to(a) for p in fa] == [p.relative_to(b) for p in fb] and fa
    for pa, pb in zip(fa, fb, strict=True):
        da, db = h5_arrays(pa), h5_arrays(pb)
        assert sorted(da) == sorted(db)
        for k in da:
            if atol == 0.0 or da[k].dtype.kind not in "fc":
                assert np.array_equal(da[k], db[k]), (pa, k)
            else:
                np.testing.assert_allclose(da[k], db[k], atol=atol, rtol=0, err_msg=f"{pa}:{k}")


def run_cli(case: dict, out: Path, ranks: int):
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(case))
    cmd = [sys.executable, "-m", "femplast", str(path), "--out", str(out), "--quiet"]
    if ranks > 1:
        cmd = [MPIRUN, "-n", str(ranks), *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.mpi
def test_kmc_quench_then_patch_tests_serial_equals_mpirun(tmp_path):
    """Each realization is quenched by KMC, then probed by patch tests on the quenched glass
    and at stationary strains, in one run; 2 ranks give the same files bit for bit."""
    case = dict(BASE, kmc=dict(enabled=True, temperature=0.25, max_events=400,
                               stop="max_events"),
                patches=dict(PATCHES, initial=True, gamma_ext=[0.2, 0.3]))
    s1 = run_cli(case, tmp_path / "serial", 1)
    s2 = run_cli(case, tmp_path / "mpi", 2)
    for pattern in ("realizations/*.h5", "patches/*.h5", "quench/*.h5"):
        assert_same_files(tmp_path / "serial", tmp_path / "mpi", pattern)
    states = {e["state"] for e in s1["patches"]["entries"]}
    assert states == {"initial", "gamma_ext=0.2", "gamma_ext=0.3", "stationary"}
    assert s1["patches"]["entries"] == s2["patches"]["entries"]
    assert s1["kmc"]["mean"]["kmc_events"] == 400
    # the patch tests see the quenched glass: the same barriers as probing its state file
    for e in s1["patches"]["entries"]:
        assert e["count"] > 0 and e["dtau_c"]["mean"] > 0


def test_patch_tests_after_any_stage_do_not_perturb_the_stages(tmp_path):
    """A Bauschinger protocol probed at the stationary strain of the load stage and after
    unloading: the stage files equal those of the same run without probes, bit for bit."""
    plain = case_from_dict(dict(BASE, stages=BAUSCHINGER))
    probed = case_from_dict(dict(BASE, stages=BAUSCHINGER,
                                 patches=dict(PATCHES, initial=False, gamma_ext=[0.3],
                                              after=["unload"])))
    run_case(plain, tmp_path / "plain", MPI.COMM_SELF, quiet=True)
    s = run_case(probed, tmp_path / "probed", MPI.COMM_SELF, quiet=True)
    assert_same_files(tmp_path / "plain", tmp_path / "probed", "stages/*/realizations/*.h5")
    ent = s["patches"]["entries"]
    assert {e["state"] for e in ent} == {"gamma_ext=0.3", "stationary", "after:unload"}
    with h5py.File(tmp_path / "probed" / "patches" / "r0000.h5") as f:
        labels = [f[g].attrs["label"] for g in sorted(f)]
        assert labels == ["gamma_ext=0.3", "after:unload"]
        # the unloaded state: zero mean resolved external stress along the load (to 1e-10)
        ti = f["s2/n2/tau_i"][:, 0]  # per position, resolved on alpha = 0
    assert abs(ti.mean()) < 0.2 * np.abs(ti).mean() + 1e-9

    def mean(state, alpha, q="tau_c"):
        return next(e[q]["mean"] for e in ent if e["state"] == state and e["size"] == "n2"
                    and e["alpha"] == alpha)

    # sheared forward then unloaded, the glass is weaker backward (Bauschinger, sec. 5)
    assert mean("after:unload", 0.0, "dtau_c") > mean("after:unload", 90.0, "dtau_c")


@pytest.mark.mpi
def test_distributed_sample_with_stages_equals_serial(tmp_path):
    """run.parallel: sample (one mesh over 2 ranks) runs stages; the same events as serial,
    stresses to round-off of the distributed direct solve."""
    case = dict(BASE, redistribution=dict(backend="direct"), stages=BAUSCHINGER[:2],
                run=dict(realizations=1, seed=5))
    case["stages"] = [dict(BAUSCHINGER[0], gamma=0.08), BAUSCHINGER[1]]
    run_cli(case, tmp_path / "serial", 1)
    run_cli(dict(case, run=dict(case["run"], parallel="sample")), tmp_path / "sample", 2)
    assert_same_files(tmp_path / "serial", tmp_path / "sample", "stages/*/realizations/*.h5",
                      atol=1e-9)


def test_patch_state_keys_are_checked():
    bad = [(dict(patches=dict(PATCHES, after=["nope"]), stages=BAUSCHINGER), "patches.after[0]"),
           (dict(patches=dict(PATCHES, stage="unload"), stages=BAUSCHINGER), "patches.stage"),
           (dict(patches=dict(PATCHES, gamma_ext=[0.4]), stages=BAUSCHINGER),
            "patches.gamma_ext[0]")]
    for extra, key in bad:
        with pytest.raises(FemplastInputError) as e:
            case_from_dict(dict(BASE, **extra))
        assert e.value.key == key
