"""docs/getting_started.py (a jupytext notebook) runs as a script: case -> results -> plot ->
a field opened with pyvista off-screen."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_getting_started_notebook_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "getting_started.py")], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "getting-started"
    assert "Results(2 realizations" in r.stdout
    assert "snapshot strains: [0.1, 0.4]" in r.stdout
    assert (out / "run" / "summary.json").is_file()
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "eps_pl_xy.png")
    assert img.shape[:2] == (450, 500)
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 20  # a field, not a blank
    assert (out / "stress_strain.png").stat().st_size > 10_000
