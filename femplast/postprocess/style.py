"""One figure style for every femplast plot: sizes, fonts, colours, symbols and units.

Units are the Lennard-Jones units of the atomistic reference (``docs/case-reference.md``):
lengths in sigma_SL, stresses in eps_SL / sigma_SL^2, angles in degrees; strains are
dimensionless.
"""

from __future__ import annotations

import contextlib

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt  # noqa: E402
from cycler import cycler  # noqa: E402

COLORS = ["#c0392b", "#2471a3", "#229954", "#d68910", "#7d3c98", "#17a589", "#5d6d7e",
          "#a04000"]
SINGLE = (3.4, 2.6)  # one journal column, inches
DOUBLE = 7.0  # two columns

RC = {
    "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "font.size": 9, "axes.labelsize": 9, "axes.titlesize": 9, "legend.fontsize": 7.5,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "mathtext.fontset": "dejavusans",
    "axes.linewidth": 0.8, "lines.linewidth": 1.2, "lines.markersize": 4,
    "xtick.direction": "in", "ytick.direction": "in", "xtick.top": True, "ytick.right": True,
    "legend.frameon": False, "axes.grid": False, "axes.prop_cycle": cycler(color=COLORS),
    "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
}

# symbols (LaTeX via mathtext) and units
U_STRESS = r"$\epsilon_{\rm SL}\,\sigma_{\rm SL}^{-2}$"
U_LENGTH = r"$\sigma_{\rm SL}$"
GAMMA = r"external strain $\gamma^{\rm ext}$"
GAMMA_SPECIMEN = r"applied strain $\gamma^{\rm ext}$ (grip displacement / $H$)"


def strain_label(measure: str | None = None) -> str:
    """Axis label of the loading parameter ``gamma_ext``: the box's external strain, or on a
    specimen (any stress ``measure``, :func:`stress_symbol`) the displacement of its driven
    grip over the specimen height ``H`` (femplast.fe.boundary): the nominal strain in tension
    and compression, the engineering shear strain between walls."""
    return GAMMA if measure is None else GAMMA_SPECIMEN


def stress_symbol(alpha_deg: float = 0.0, what: str = "", measure: str | None = None) -> str:
    """``Sigma^ext_xy`` for alpha_ext = 0, else the stress resolved on alpha_ext; a specimen's
    ``measure`` (:meth:`femplast.postprocess.data.Realization.stress_measure`): its nominal
    stress ``sigma_nom`` or the grip force per area ``Sigma_grip``."""
    pre = {"": "", "drop": r"\delta", "inc": r"\Delta"}[what]
    if measure == "nominal":
        return rf"${pre}\sigma_{{\rm nom}}$"
    if measure == "drive":
        return rf"${pre}\Sigma_{{\rm grip}}$"
    sub = "xy" if abs(alpha_deg) < 1e-9 else r"\alpha"
    return rf"${pre}\Sigma^{{\rm ext}}_{{{sub}}}$"


# a specimen's nominal stress is its grip force per unit grip length (steps/nominal_stress)
STRESS_NAMES = {None: "external stress", "nominal": "nominal stress", "drive": "grip force / area"}


def stress_label(alpha_deg: float = 0.0, what: str = "", measure: str | None = None) -> str:
    """Axis label of the external stress, its avalanche drops or its increments; a
    specimen's in its own ``measure`` (named, and in the symbol: :func:`stress_symbol`)."""
    name = {"": STRESS_NAMES[measure], "drop": "stress drop", "inc": "stress increment"}[what]
    return f"{name} {stress_symbol(alpha_deg, what, measure)} [{U_STRESS}]"


PATCH_LABELS = {
    "sigma_vm": (r"$\tilde\Sigma_{\rm vm}$", "von Mises stress"),
    "tau_i": (r"$\tilde\tau_i$", "resolved shear stress"),
    "tau_c": (r"$\tilde\tau_c$", "yield stress"),
    "dtau_c": (r"$\Delta\tilde\tau_c$", "distance to threshold"),
    "delta_tau_c": (r"$\delta\tilde\tau_c$", "stress drop"),
}

SCALAR_LABELS = {
    "LOC": ("localization index LOC", ""),
    "plastic_strain_variance": (r"plastic strain variance $\langle\delta\varepsilon_{\rm pl}^2"
                                r"\rangle$", ""),
    "mean_threshold": (r"mean threshold $\langle\sigma_c\rangle$", f" [{U_STRESS}]"),
    "internal_stress_std": (r"internal stress std $\sigma_{\rm int}$", f" [{U_STRESS}]"),
}

# cell fields of fields/*.xdmf: (symbol, name, unit); local stresses are lower-case sigma,
# the external stress Sigma (tensorial paper eq. 3); scalar-model fields after the scalar paper
FIELD_LABELS = {
    "sigma_xx": (r"$\sigma_{xx}$", "local stress", U_STRESS),
    "sigma_yy": (r"$\sigma_{yy}$", "local stress", U_STRESS),
    "sigma_xy": (r"$\sigma_{xy}$", "local shear stress", U_STRESS),
    "sigma_vm": (r"$\sigma_{\rm vm}$", "von Mises stress", U_STRESS),
    "pressure": (r"$p$", "pressure", U_STRESS),
    "eps_pl_xx": (r"$\varepsilon^{\rm pl}_{xx}$", "plastic strain", ""),
    "eps_pl_yy": (r"$\varepsilon^{\rm pl}_{yy}$", "plastic strain", ""),
    "eps_pl_xy": (r"$\varepsilon^{\rm pl}_{xy}$", "plastic strain", ""),
    "dtau_c_min": (r"$\min_i \Delta\tau_{c,i}$", "distance to threshold", U_STRESS),
    "tau_c": (r"$\sigma_c$", "local threshold", U_STRESS),
    "x": (r"$x = \sigma_c - \sigma_{xy}$", "local stability", U_STRESS),
    "sigma0_xy": (r"$\sigma^0_{xy}$", "frozen-in stress", U_STRESS),
    "tau_c_cell": (r"$\tau_c$", "slip threshold", U_STRESS),
    "tau_c_min": (r"$\min_i \tau_{c,i}$", "lowest slip threshold", U_STRESS),
    "tau_c_mean": (r"$\langle \tau_{c,i} \rangle_i$", "mean slip threshold", U_STRESS),
    "G": (r"$G$", "shear modulus", U_STRESS),
    "B": (r"$B$", "bulk modulus", U_STRESS),
}


def field_label(name: str) -> str:
    """Colour-bar label of a cell field: ``name symbol [unit]`` (the raw name when unknown)."""
    if name not in FIELD_LABELS:
        return name.replace("_", " ")
    sym, what, unit = FIELD_LABELS[name]
    return f"{what} {sym}" + (f" [{unit}]" if unit else "")


def field_symbol(name: str) -> str:
    return FIELD_LABELS[name][0] if name in FIELD_LABELS else name.replace("_", " ")


@contextlib.contextmanager
def style():
    with plt.rc_context(RC):
        yield


def panel_letters(axes, x=-0.2, y=1.02):
    for i, ax in enumerate(axes):
        ax.text(x, y, f"({chr(97 + i)})", transform=ax.transAxes, fontweight="bold",
                va="bottom", ha="left")
