"""Checkpoints, SIGINT/SIGTERM and --resume (femplast.protocols)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import datasets, interrupt_after
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.app.cases import load_case
from femplast.app.runner import run_case
from femplast.protocols import checkpoint as ck

CASE = dict(model="tensorial", mesh=dict(kind="quad", n=8, L=52.8), slip=dict(N=16),
            loading=dict(dgamma_ext=1e-4),
            kmc=dict(enabled=True, temperature=0.3, stop="max_events", max_events=1500),
            stages=[dict(name="load", gamma=0.8, snapshots=[0.1, 0.4]),
                    dict(name="unload", kind="unload"),
                    dict(name="forward", start="unload", alpha_ext=0, gamma=0.1,
                         snapshots=[0.05]),
                    dict(name="reverse", start="unload", alpha_ext=90, stress=0.25),
                    dict(name="hold", kind="hold", temperature=0.2, events=200)],
            run=dict(realizations=3, seed=9, checkpoint_interval=0.05))


def field_files(out: Path) -> list[Path]:
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.parent.name == "fields")


def assert_same_outputs(a: Path, b: Path) -> int:
    da, db = datasets(a), datasets(b)
    assert sorted(da) == sorted(db)
    for k in da:
        assert np.array_equal(da[k], db[k]), k
    # field snapshots (quench, every stage): the same files, byte for byte (XDMF and HDF5)
    fa = field_files(a)
    assert fa == field_files(b) and len(fa) == 2 * 3 * 6  # .xdmf + .h5, 3 realizations
    for p in fa:
        assert (a / p).read_bytes() == (b / p).read_bytes(), p
    assert not list(b.rglob(".partial*"))
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    for k in ("stages", "kmc", "total_slip_events", "seeds"):
        assert sa.get(k) == sb.get(k), k
    return len(da)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    (d / "case.yaml").write_text(yaml.safe_dump(CASE))
    case = load_case(d / "case.yaml")
    run_case(case, d / "out", MPI.COMM_SELF, quiet=True, event_log=True)
    return d / "case.yaml", d / "out"


def test_flatten_roundtrip(tmp_path):
    data = dict(a=np.arange(5.0), b=[1, 2.5, None, "x", float("inf"), np.int64(3)],
                c=dict(d=np.zeros((2, 3), np.int8), e=[np.ones(1)], f=0.1 + 0.2), g=True)
    ck.save(tmp_path / "c.npz", data)
    back = ck.load(tmp_path / "c.npz")
    assert back["b"] == [1, 2.5, None, "x", float("inf"), 3]
    assert back["c"]["f"] == 0.1 + 0.2 and back["g"] is True
    np.testing.assert_array_equal(back["c"]["d"], data["c"]["d"])
    assert back["c"]["d"].dtype == np.int8
    assert not (tmp_path / "c.npz.tmp").exists()


@pytest.mark.parametrize("after_ticks", [3, 10, 20, 35])
def test_interrupt_and_resume_in_process(reference, tmp_path, monkeypatch, after_ticks):
    """Interrupt at a safe point (KMC, stages) as a signal would, resume: same outputs."""
    case_file, ref = reference
    tick = interrupt_after(monkeypatch, after_ticks)
    case = load_case(case_file)
    out = tmp_path / "out"
    with pytest.raises(ck.Interrupted) as e:
        run_case(case, out, MPI.COMM_SELF, quiet=True, event_log=True)
    assert e.value.exit_code == 143
    assert not (out / "summary.json").exists()
    cp = ck.load(out / "checkpoint" / "rank000-of-001.npz")
    phase = cp["current"]["phase"] if cp["current"] else "between"
    monkeypatch.setattr(ck.Interrupter, "tick", tick)
    run_case(load_case(case_file), out, MPI.COMM_SELF, quiet=True, resume=True, event_log=True)
    n = assert_same_outputs(ref, out)
    print(f"\ninterrupted after {after_ticks} safe points ({phase}, "
          f"{len(cp['done'])} done): {n} datasets bit-identical after --resume")


def test_sigterm_subprocess_then_resume(reference, tmp_path):
    case_file, ref = reference
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "femplast", str(case_file), "--out", str(out), "--quiet",
           "--event-log"]
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoint" / "rank000-of-001.npz"
    t0 = time.monotonic()
    # a checkpoint and a finished stage exist: the run is mid-way
    while not (ckpt.exists() and list(out.glob("stages/*/realizations/*.h5"))) \
            and time.monotonic() - t0 < 60 and p.poll() is None:
        time.sleep(0.01)
    assert ckpt.exists() and p.poll() is None, "no checkpoint written before the end"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "--resume" in err
    assert not (out / "summary.json").exists()
    assert not list(out.rglob("*.tmp"))  # no partial file looks complete
    before = len(list(out.rglob("*.h5")))
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n = assert_same_outputs(ref, out)
    print(f"\nSIGTERM after {before} of {len(list(ref.rglob('*.h5')))} files: resumed, "
          f"{n} datasets bit-identical")
    # a finished run cannot be resumed; a fresh --out must be empty
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "summary.json" in r.stderr
