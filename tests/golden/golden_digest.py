"""Golden outputs: every shipped case, cut down, at a fixed seed, reduced to digests.

``python tests/golden/golden_digest.py freeze`` runs the cases and writes ``golden.json``;
``test_golden.py`` reruns them and compares. A digest holds, per output file,
- HDF5: every dataset (dtype, shape, sha256 of its bytes) and every attribute (repr), in
  realization files, stage files, quench files, patch tables and field (XDMF) data;
- JSON (summary.json, sweep points): every leaf value, wall times and versions excepted;
- CSV tables: sha256 of the text.
Bit for bit: a refactor that changes one float anywhere changes a digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = HERE / "golden.json"
MPIRUN = str(Path(sys.executable).parent / "mpirun")

# (name, case file, extra CLI args, ranks): every shipped case, cut to < 2 min together
_V = ["--realizations", "1", "--set", "loading.gamma_max=0.6",
      "--set", "loading.stationary_from=0.3", "--set", "output.snapshots=[0.6]"]
_STAGES = ("stages=[{name: load, alpha_ext: 0, gamma: 0.3}, {name: unload, kind: unload},"
           " {name: forward, start: unload, alpha_ext: 0, gamma: 0.05},"
           " {name: reverse, start: unload, alpha_ext: 90, gamma: 0.05}]")
CASES = [
    ("quickstart", "quickstart.yaml", ["--realizations", "2", "--event-log"], 1),
    ("paper_optimum", "paper_optimum_l6.6.yaml",
     ["--realizations", "2", "--set", "loading.gamma_max=0.8", "--set", "output.snapshots=[0.8]"],
     1),
    ("inclusion", "inclusion.yaml", ["--set", "mesh.n=16"], 1),
    ("patches_small", "patches_small.yaml", [], 1),
    ("paper_patches", "paper_patches_l6.6.yaml",
     ["--realizations", "1", "--set", "loading.gamma_max=0.6", "--set", "patches.n=[1,3]",
      "--set", "patches.alpha=[0,90]", "--set", "patches.gamma_ext=[0.6]"], 1),
    ("quench_kmc", "quench_kmc.yaml",
     ["--realizations", "2", "--set", "mesh.n=8", "--set", "mesh.L=52.8",
      "--set", "kmc.max_events=3000", "--set", "output.snapshots=[0.0]"], 1),
    ("bauschinger", "bauschinger_l6.6.yaml",
     ["--realizations", "2", "--set", "mesh.n=8", "--set", "mesh.L=52.8", "--set", _STAGES,
      "--set", "run.checkpoint_interval=0", "--event-log"], 1),
    ("scalar_esl_soft", "scalar_esl_soft.yaml",
     ["--realizations", "2", "--set", "mesh.n=8", "--set", "mesh.L=70.88",
      "--set", "loading.gamma_max=0.6", "--set", "loading.stationary_from=0.3",
      "--set", "output.snapshots=[0.3]"], 1),
    ("scalar_gq_hard", "scalar_gq_hard.yaml",
     ["--realizations", "2", "--set", "mesh.n=8", "--set", "mesh.L=70.88",
      "--set", "loading.gamma_max=0.6", "--set", "loading.stationary_from=0.3",
      "--set", "output.snapshots=[0.3]", "--set", "scalar.fit=null"], 1),
    ("sweep_small", "sweep_small.yaml",
     ["--realizations", "2", "--set", "loading.gamma_max=1.0",
      "--set", "patches.gamma_ext=[1.0]", "--set", "sweep.grid.k=[2.18]",
      "--set", "sweep.finite_size=[6]"], 1),
    ("sweep_paper", "sweep_paper_l6.6.yaml",
     ["--realizations", "1", "--set", "loading.gamma_max=0.6",
      "--set", "patches.gamma_ext=[0.6]", "--set", "loading.stationary_from=0.3",
      "--set", "sweep.grid={k: [2.18], lambda: [2.05], chi: [2.25, 2.5]}",
      "--set", "sweep.finite_size=[]"], 1),
    *[(f"variant_{v}", f"variant_{v}.yaml", _V, 1) for v in "ABCDEFGHI"],
    ("quickstart_mpi", "quickstart.yaml", ["--realizations", "3", "--set", "output.snapshots=[]"],
     2),
    ("sample_mpi", "quickstart.yaml",
     ["--realizations", "1", "--set", "run.parallel=sample", "--set", "loading.gamma_max=0.2",
      "--set", "loading.stationary_from=0.1", "--set", "output.snapshots=[0.2]"], 2),
]

ROUNDOFF = {"sample_mpi": 1e-12}
"""Runs reproducible only to round-off: one sample distributed over MPI ranks is solved by
MUMPS across ranks, whose reductions follow message arrival, so two runs of the *same* code
can differ in the last bit (measured: 1 run in 6 under load, 1e-16, same events). Their
float datasets are compared with this relative tolerance against arrays frozen in
``<name>.npz`` (from a run whose digests equal golden.json bit for bit); everything else
(integers, events, attributes, text) bit for bit."""

SKIP_KEYS = ("wall", "version", "time", "source", "seconds")
SKIP_ATTRS = ("doc",)  # descriptive text naming modules, not results


def run_case(name: str, case: str, args: list[str], ranks: int, base: Path) -> Path:
    out = base / name
    cmd = [sys.executable, "-m", "femplast", str(ROOT / "cases" / case), "--out", str(out),
           "--quiet", *args]
    if ranks > 1:
        cmd = [MPIRUN, "-n", str(ranks), *cmd]
    # one thread per rank: threaded BLAS/MUMPS reductions need not be reproducible bit for bit
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return out


def _attr(v) -> str:
    if isinstance(v, np.ndarray):
        return f"{v.dtype}{v.shape}:{hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()}"
    if isinstance(v, bytes):
        v = v.decode()
    return repr(v.item() if isinstance(v, np.generic) else v)


def h5_digest(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                if not any(s in k for s in SKIP_KEYS) and k not in SKIP_ATTRS:
                    out[f"{name}@{k}"] = _attr(v)
            if isinstance(obj, h5py.Dataset):
                a = obj[()]
                a = np.asarray(a)
                if a.dtype.kind == "O":
                    out[name] = repr(a.tolist())
                else:
                    h = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                    out[name] = f"{a.dtype}{a.shape}:{h}"

        for k, v in f.attrs.items():
            if not any(s in k for s in SKIP_KEYS) and k not in SKIP_ATTRS:
                out[f"@{k}"] = _attr(v)
        f.visititems(visit)
    return out


def json_leaves(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if any(s in k for s in SKIP_KEYS):
                continue
            out.update(json_leaves(v, f"{prefix}/{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(json_leaves(v, f"{prefix}[{i}]"))
    else:  # repr: exact for floats, and NaN equals NaN
        out[prefix] = repr(obj)
    return out


def digest(outdir: Path) -> dict:
    """File (relative path) -> {item: digest} for every output a run leaves."""
    res = {}
    for p in sorted(outdir.rglob("*")):
        rel = p.relative_to(outdir).as_posix()
        if p.is_dir() or rel.startswith("checkpoint/") or rel == "case.yaml":
            continue
        if p.suffix == ".h5":
            res[rel] = h5_digest(p)
        elif p.suffix == ".json":
            text = p.read_text().replace(str(outdir), "OUTDIR").replace(str(ROOT), "ROOT")
            res[rel] = json_leaves(json.loads(text))
        elif p.suffix == ".csv":
            # comment lines describe (and name modules); the rows are the results
            rows = [ln for ln in p.read_text().splitlines() if not ln.startswith("#")]
            res[rel] = {"sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()}
        elif p.suffix == ".xdmf":
            res[rel] = {"exists": True}
    return res


def float_arrays(outdir: Path) -> dict[str, np.ndarray]:
    """Every float dataset of the HDF5 files of a run, keyed ``file:dataset``."""
    out = {}
    for p in sorted(outdir.rglob("*.h5")):
        rel = p.relative_to(outdir).as_posix()
        if rel.startswith("checkpoint/"):
            continue
        with h5py.File(p, "r") as f:
            f.visititems(lambda k, v, rel=rel: out.__setitem__(f"{rel}:{k}", v[()])
                         if isinstance(v, h5py.Dataset) and v.dtype.kind == "f" else None)
    return out


def compute(names=None, base: Path | None = None) -> dict:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="femplast-golden-")) if base is None else base
    out = {}
    for name, case, args, ranks in CASES:
        if names and name not in names:
            continue
        out[name] = digest(run_case(name, case, args, ranks, base))
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["freeze-arrays"] and len(argv) == 2:  # freeze-arrays NAME (ROUNDOFF runs)
        import tempfile

        name = argv[1]
        base = Path(tempfile.mkdtemp(prefix="femplast-golden-"))
        got = json.loads(json.dumps(compute([name], base)[name]))
        want = json.loads(GOLDEN.read_text())[name]
        if any(want[f][k] != got.get(f, {}).get(k) for f in want for k in want[f]):
            print(f"{name}: this run differs from golden.json; run again", file=sys.stderr)
            return 1
        np.savez_compressed(HERE / f"{name}.npz", **float_arrays(base / name))
        print(f"wrote {HERE / f'{name}.npz'}")
        return 0
    if argv[:1] == ["freeze"]:
        data = compute()
        GOLDEN.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1e3:.0f} kB, {len(data)} runs)")
        return 0
    print("usage: python tests/golden/golden_digest.py freeze", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
