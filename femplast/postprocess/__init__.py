"""Post-processing of femplast output directories: figures, field renders, an animation,
index pages. Nothing in the solver layers imports it; of them it imports only the pure-numpy
:mod:`femplast.analysis.calibration` (reference data, the finite-size fit of summary.json), so
``femplast plot`` never loads dolfinx (numpy, h5py, meshio, matplotlib, pillow).
The numbers the figures mark (yield, peak and flow stresses, power-law exponents, the Eshelby
field) are computed in :mod:`femplast.postprocess.measures`.

Entry points: ``python -m femplast plot OUTDIR [--out FIGDIR] [--quiet] [--reference DIR]``,
``python -m femplast plot RUN1 RUN2 ... --labels a,b`` (comparison, :mod:`.compare`),
``python -m femplast.postprocess OUTDIR``, ``python postprocess/plot.py OUTDIR`` or
:func:`plot_run`. Figures are data-driven: each family is drawn when its data is present.

Formats of families written by other parts of femplast (assumed where not yet produced):

* patch statistics, as femplast.analysis.patches writes them (read and checked against its summary):
  ``patches/rNNNN.h5`` groups ``s<i>`` (attrs ``label``, ``gamma_ext``) > one group per size
  (attr ``R``) with (position, alpha) arrays ``tau_i, tau_c, dtau_c, delta_tau_c, complete``,
  per-position ``von_mises`` and ``alpha``; probes at ``gamma_ext >= stationary_from`` are
  pooled as state 'stationary' (as its summary does). Also accepted (the issue's format):
  ``patches/rNNNN.h5`` with 1-D datasets, one entry per patch test:
  ``state`` (str or int), ``R``, ``alpha_deg``, ``tau_i``, ``tau_c``, ``dtau_c``,
  ``delta_tau_c``, ``sigma_vm`` (at the root or in a ``patches`` group); or only
  ``summary.json["patches"]``: a list of ``{state, R, alpha_deg, <q>_mean, <q>_std}`` (also
  accepted: ``{"mean": {q: ..}, "std": {q: ..}}`` or ``{q: {"mean": .., "std": ..}}``);
* Bauschinger: ``stages/<stage>/realizations/rNNNN.h5``, same layout as ``realizations/``;
  the stage's loading angle is ``state.attrs["alpha_ext"]`` (degrees; 0 if absent) and the
  stress is resolved on it;
* scalar EPM: ``realizations/rNNNN.h5`` ``steps/`` with ``gamma_ext``, ``stress`` (1-D),
  ``plastic_strain_variance``, ``mean_threshold``, ``LOC``, ``internal_stress_std``;
* calibration sweep: a ``.csv`` (header row; ``#`` comments skipped) or ``.h5`` (1-D datasets
  at the root or in a first-level group, or one compound dataset) in ``OUTDIR/calibration/``,
  ``OUTDIR/sweep/`` or ``OUTDIR``, with columns ``k, lambda, chi, L_macro, L_meso_plus,
  L_meso_minus, L_stat`` and optionally ``l`` (element length: one curve per l);
* finite-size scaling: ``summary.json["finite_size"] = {"L": [...], "std_sigma_xy": [...]}``.
"""

from femplast.postprocess.data import NoRunError, RunData, load_run
from femplast.postprocess.plot import main, plot_run

__all__ = ["NoRunError", "RunData", "load_run", "main", "plot_run"]
