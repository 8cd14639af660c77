"""The case checks of the realization pipeline (sections kmc, stages; the probed states of
patch tests), in a module without compiled kernels: validating a case (``--check``) does not
import numba."""

from __future__ import annotations

from femplast.config.case import snapshots_within
from femplast.errors import FemplastInputError


def check(case) -> None:
    """Consistency of the sections kmc and stages (FemplastInputError)."""
    import re

    kmc_on = case.kmc.enabled or case.model == "quench"
    if (kmc_on or case.stages) and case.model not in ("tensorial", "quench"):
        raise FemplastInputError("model", case.model, "'tensorial' or 'quench' with kmc or "
                                 "stages")
    if case.model == "quench" and case.stages:
        raise FemplastInputError("stages", "[...]", "empty with model: quench")
    names: list[str] = []
    for i, sg in enumerate(case.stages):
        k = f"stages[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9_-]+", sg.name or ""):
            raise FemplastInputError(f"{k}.name", sg.name, "a non-empty name of letters, "
                                     "digits, '-' and '_'")
        if sg.name in names:
            raise FemplastInputError(f"{k}.name", sg.name, "a name not used by another stage")
        if sg.start is not None and sg.start not in names:
            raise FemplastInputError(f"{k}.start", sg.start, "the name of an earlier stage "
                                     f"({', '.join(names) or 'none'}) or null")
        names.append(sg.name)
        if sg.kind == "load" and sg.gamma is None and sg.stress is None:
            raise FemplastInputError(f"{k}.gamma", None, "a strain (strain control) or a "
                                     "stress target with kind: load")
        if sg.kind != "load" and sg.stress is not None:
            raise FemplastInputError(f"{k}.stress", sg.stress, "null with kind: "
                                     f"{sg.kind} (unload targets a zero stress)")
        if sg.kind == "hold" and sg.gamma is not None:
            raise FemplastInputError(f"{k}.gamma", sg.gamma, "null with kind: hold")
        if sg.kind != "hold" and (sg.temperature or sg.events):
            raise FemplastInputError(f"{k}.temperature", sg.temperature,
                                     "0 (thermal events only in hold stages)")
        if sg.kind == "hold" and (sg.temperature > 0) != (sg.events > 0):
            raise FemplastInputError(f"{k}.events", sg.events, "> 0 together with a "
                                     "temperature > 0 (or both 0)")
        if sg.snapshots and (sg.kind != "load" or sg.stress is not None):
            raise FemplastInputError(f"{k}.snapshots", sg.snapshots, "empty unless kind: load "
                                     "with strain control (other stages write their final "
                                     "state)")
        sg.snapshots = snapshots_within(f"{k}.snapshots", sg.snapshots, f"{k}.gamma",
                                        sg.gamma or 0.0)
    _check_patch_states(case, names)
    if case.stages and case.output.snapshots:
        raise FemplastInputError("output.snapshots", case.output.snapshots, "empty with "
                                 "stages (snapshots are per stage: stages[i].snapshots)")


def _check_patch_states(case, names: list[str]) -> None:
    """patches.stage and patches.after name stages of the case."""
    pa = case.patches
    if not pa.enabled:
        return
    strain = [s.name for s in case.stages if s.kind == "load" and s.stress is None]
    if pa.stage is not None and pa.stage not in strain:
        raise FemplastInputError("patches.stage", pa.stage, "the name of a strain-controlled "
                                 f"load stage ({', '.join(strain) or 'none'})")
    for i, n in enumerate(pa.after):
        if n not in names:
            raise FemplastInputError(f"patches.after[{i}]", n, "the name of a stage "
                                     f"({', '.join(names) or 'none: the case has no stages'})")
    if case.stages and pa.gamma_ext:
        probed = next((s for s in case.stages if s.name == (pa.stage or strain[0])), None) \
            if (pa.stage or strain) else None
        if probed is None:
            raise FemplastInputError("patches.gamma_ext", pa.gamma_ext, "empty when no stage "
                                     "is strain-controlled (use patches.after)")
        for i, g in enumerate(pa.gamma_ext):
            if g > probed.gamma:
                raise FemplastInputError(f"patches.gamma_ext[{i}]", g, f"<= stages "
                                         f"{probed.name}.gamma = {probed.gamma}")

