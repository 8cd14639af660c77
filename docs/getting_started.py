# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Getting started with femplast
#
# A first hour in five cells: run a small case of the tensorial elasto-plastic model (AQS
# simple shear of a 8 x 8 periodic box, the tensorial paper's slip systems), load its
# results with femplast's Python API, plot the stress-strain curves, and open a cell field
# with pyvista.
#
# This file is a [jupytext](https://jupytext.readthedocs.io) notebook: open it in Jupyter
# (with jupytext installed), or run it as a script, `python docs/getting_started.py`; the
# test suite runs it that way (tests/test_getting_started.py). It writes into
# `getting-started/` under the current directory.

# %%
# ruff: noqa: E402  (a notebook imports in the cell that first needs a module)
from pathlib import Path

import femplast  # first: on the pip wheel it loads MPI before dolfinx
from femplast.app.examples import shipped_case

OUT = Path("getting-started")
OUT.mkdir(exist_ok=True)

# %% [markdown]
# ## 1. Run a case
#
# `cases/quickstart.yaml` ships with femplast (`femplast examples DIR` copies every case).
# Overrides are the `--set` of the command line: here 2 realizations sheared to
# gamma_ext = 0.4, with cell fields at two strains. The same run from a shell:
# `femplast run quickstart.yaml --realizations 2 --set loading.gamma_max=0.4 ...`.

# %%
case = femplast.load_case(shipped_case("quickstart.yaml"), {
    "run.realizations": 2, "loading.gamma_max": 0.4, "loading.stationary_from": 0.2,
    "output.snapshots": [0.1, 0.4]})
res = femplast.run(case, OUT / "run")  # returns femplast.Results
print(res)

# %% [markdown]
# ## 2. Load the results
#
# `femplast.load_run(DIR)` reads any output directory (also one written by the command
# line). `summary` is summary.json; `steps` and `avalanches` are the per-realization tables.

# %%
res = femplast.load_run(OUT / "run")
st = res.stationary
print(f"stationary shear stress {st['sigma_xy_mean']:.4f} +- {st['sigma_xy_std']:.4f}, "
      f"{st['avalanches']} avalanches")
steps = res.steps[0]
print("columns of steps/:", sorted(steps))

# %% [markdown]
# ## 3. Plot the stress-strain curves

# %%
import matplotlib.pyplot as plt  # headless: matplotlib falls back to Agg

fig, ax = plt.subplots(figsize=(5, 3.5))
for i, s in enumerate(res.steps):
    ax.plot(s["gamma_ext"], s["stress"][:, 2], lw=0.8, label=f"realization {i}")
ax.set_xlabel(r"$\gamma_{ext}$")
ax.set_ylabel(r"$\Sigma_{xy}$ (LJ units)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "stress_strain.png", dpi=120)

# %% [markdown]
# ## 4. Open a field with pyvista
#
# Cell fields are XDMF time series (`fields/rNNNN.xdmf` + `.h5`): one time per snapshot,
# every field at each (stresses, plastic strain, distance to threshold, thresholds; per-cell
# moduli in variant A).
# ParaView, meshio and dolfinx (`XDMFFile.read_mesh(name="mesh")`) read them too.

# %%
import pyvista as pv

pv.OFF_SCREEN = True
reader = pv.get_reader(str(OUT / "run" / "fields" / "r0000.xdmf"))
print("snapshot strains:", reader.time_values)
reader.set_active_time_value(reader.time_values[-1])
grid = reader.read()["fields"]  # blocks: "fields" (the time series) and "mesh"
print("fields:", sorted(grid.cell_data))
plotter = pv.Plotter(off_screen=True, window_size=(500, 450))
plotter.add_mesh(grid, scalars="eps_pl_xy", cmap="viridis", show_edges=False)
plotter.view_xy()
plotter.screenshot(str(OUT / "eps_pl_xy.png"))
plotter.close()
print("wrote", sorted(p.name for p in OUT.glob("*.png")))
