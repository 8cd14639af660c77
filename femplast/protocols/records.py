"""Tables of a run: per-increment steps rebuilt from the avalanche records (one builder for
every run kind)."""

from __future__ import annotations

import numpy as np

from femplast.redistribution.backends import from_dsp


def steps_table(rec: np.ndarray, k_end: int, dgamma: float, R_mean_dsp, int0_dsp, epl0):
    """Per-increment box averages after the avalanche, rebuilt from the avalanche records.

    Args:
        rec: avalanche records (femplast.tensorial.aqs.REC_COLS columns), in increment order.
        k_end: increments of the stage; rows ``k = 0 .. k_end``.
        dgamma: the external strain increment.
        R_mean_dsp: the box-average load response (d, s, p), (3,), or per increment
            (k_end + 1, 3) when it changes (evolving moduli: AQSDriver.load_mean_per_increment).
        int0_dsp, epl0: mean internal stress (d, s, p) and plastic strain before the first
            avalanche.

    Returns:
        (gamma_ext, mean stress [xx, yy, xy], mean plastic strain, slip events) per increment.
    """
    k = np.arange(k_end + 1)
    kr = rec[:, 0].astype(np.int64)
    Rk = np.broadcast_to(np.asarray(R_mean_dsp, float), (k_end + 1, 3))
    int_after = np.vstack([int0_dsp[None, :], rec[:, 6:9] - (kr * dgamma)[:, None] * Rk[kr]])
    epl_after = np.vstack([epl0[None, :], rec[:, 9:12]])
    idx = np.searchsorted(kr, k, side="right")  # 0: before the first avalanche
    tot = int_after[idx] + (k * dgamma)[:, None] * Rk
    nev = np.zeros(k_end + 1, np.int64)
    np.add.at(nev, kr, rec[:, 1].astype(np.int64))
    return k * dgamma, from_dsp(tot.T), epl_after[idx], nev


def relaxation_rounds(step: np.ndarray, relaxation_step: np.ndarray,
                      box_stress: np.ndarray) -> dict[str, np.ndarray]:
    """One row per relaxation round of the event log: the avalanche's ``step``, the round's
    ``relaxation_step`` and the box-average stress [xx, yy, xy] at its start (after the
    previous round's redistribution; after the last round: the avalanche's
    ``stress_after``), so event-based statistics can follow the external stress within an
    avalanche (as the tensorial paper's notebooks do)."""
    step, rs = np.asarray(step), np.asarray(relaxation_step)
    first = np.ones(len(step), bool)
    first[1:] = (step[1:] != step[:-1]) | (rs[1:] != rs[:-1])
    return dict(step=step[first], relaxation_step=rs[first],
                stress_before=np.asarray(box_stress)[first])
