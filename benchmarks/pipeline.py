"""The paper's per-realization pipeline, stage by stage, against the paper's own code (MEPLS).

    python benchmarks/pipeline.py [--realizations 3] [--json FILE] [--reference-tests 400]
                                  [--aqs-alone 5 [--reference-area 43.39]]

The protocol of the tensorial paper at its l = 6.6 optimum (15 x 15 cells, N = 36, G = 13.2,
B = 59, Weibull k = 2.18, lambda = 2.05, chi = 2.25; see cases/paper_patches_l6.6.yaml and
/work/shared/notes/mepls-protocol.md), per realization on one core:

1. KMC liquid at kB T = 0.25 for 1,100 thermal events, then the T = 0 quench;
2. AQS gamma_ext 0 -> 2 by 1e-4;
3. patch tests at the quenched state and at gamma_ext = 0.96 and 1.92: squares of 1, 2, 4, 8
   cells, 8 orientations 0, 22.5, ..., 157.5 deg, every lattice position (21,600 tests).

Times are CPU seconds (``time.process_time``: the machine is shared), medians over the
realizations, printed next to the recorded MEPLS costs (0.66 / 1.50 / 1.04 s; MEPLS draws
about N_cells / n^2 positions per size, 7,152 tests in all). ``--reference-tests`` also times
the reference implementation of a test (:func:`femplast.analysis.patches.patch_test`: one
Python call per test, a numpy generator per test, the dense Green operator) on that many
tests of the quenched state, for the before/after ratio in one run. Everything compiled is
compiled (or loaded from numba's cache) by a warm-up on a 4 x 4 box before the timings.

``--aqs-alone R`` times the AQS stage alone, for A/B comparisons of the event loop: the
quenched states of the first 4 realizations, each run from a copy R times; the best and the
median of the R passes in us per event, and a SHA-256 digest of every end state (arrays,
generator state, event count), which must not change when a change claims to be bit for bit.
``--reference-area A`` sets ``slip.reference_area`` (systems per area; the renewal then takes
the variant path); at the cell area ``l^2 = 43.39`` every cell keeps N = 36 and the digest is
the default run's.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time

import numpy as np

import femplast  # noqa: F401  (loads MPI before dolfinx / petsc4py)

MEPLS = {"kmc_quench": 0.66, "aqs": 1.50, "patch_tests": 1.04}
"""MEPLS's recorded CPU seconds per realization on the paper case (issue 16)."""
MEPLS_TESTS = 7152
SIZES = (1, 2, 4, 8)
ALPHAS = tuple(22.5 * i for i in range(8))
STOPS = (0.96, 1.92)
KMC_EVENTS, TEMPERATURE = 1100, 0.25
DGAMMA, GAMMA_MAX = 1e-4, 2.0


def build(n: int = 15, L: float = 98.8045, N: int = 36, reference_area: float | None = None):
    from mpi4py import MPI

    from femplast.fe.mesh import structured_box
    from femplast.tensorial.model import TensorialModel

    box = structured_box(n, L, "quad", MPI.COMM_SELF)
    return TensorialModel.build(box, 13.2, 59.0, N=N, weibull_lambda=2.05, weibull_k=2.18,
                                chi=2.25, reference_area=reference_area)


def realization(model, pa, seed: int, index: int, kmc_events: int = KMC_EVENTS) -> dict:
    """One realization of the protocol; CPU seconds per stage."""
    from femplast.streams import realization_rng
    from femplast.tensorial.aqs import AQSDriver
    from femplast.tensorial.kmc import KMC, quench

    st = model.new_state(realization_rng(seed, index))
    t = time.process_time()
    drv = AQSDriver(model, st, 0.0, 1.0, 1)
    kmc = KMC(drv, TEMPERATURE, 1.0, window=2 * model.num_cells, tolerance=0.01)
    kmc.run(kmc_events, until_stationary=False)
    quench(model, st, drv)
    t_kmc = time.process_time() - t
    patch = [0.0]
    tests = [0]

    def probe(state, g, sid):
        t0 = time.process_time()
        tables = pa.analyse(state, g, 0.0, (seed, index, sid))
        patch[0] += time.process_time() - t0
        tests[0] += sum(tb["gamma_c"].size for tb in tables)

    probe(st, 0.0, 0)
    stops = [int(round(g / DGAMMA)) for g in STOPS]
    before = patch[0]
    t = time.process_time()
    aqs = AQSDriver(model, st, 0.0, DGAMMA, int(round(GAMMA_MAX / DGAMMA)))
    aqs.run(stops=stops, on_stop=lambda k: probe(st, k * DGAMMA, 1 + stops.index(k)))
    t_aqs = time.process_time() - t - (patch[0] - before)  # the probes are timed apart
    return dict(kmc_quench=t_kmc, aqs=t_aqs, patch_tests=patch[0], tests=tests[0],
                kmc_events=kmc.events, kmc_slips=drv.num_events, aqs_events=aqs.num_events)


def reference_tests(model, pa, state, count: int, seed: int = 1) -> float:
    """CPU seconds per test of the reference implementation (one Python call per test)."""
    from femplast.analysis.patches import patch_arrays, patch_test

    total = state.sig  # quenched state at gamma_ext = 0
    done, t = 0, time.process_time()
    for ps in pa.sets:
        op = pa.operator(ps, ps.ref)
        for ip in pa.positions(ps):
            cells = ps.cells[ip]
            for a in pa.alphas:
                rng = np.random.default_rng(np.random.SeedSequence([seed, ip, done]))
                patch_test(op, float(a), patch_arrays(state, cells, total[:, cells]), pa.rules,
                           rng)
                done += 1
                if done >= count // len(pa.sets) * (pa.sets.index(ps) + 1):
                    break
            if done >= count // len(pa.sets) * (pa.sets.index(ps) + 1):
                break
    return (time.process_time() - t) / max(done, 1)


def warm_up() -> None:
    """Compile (or load from numba's cache) the event loop, KMC and patch kernels on a 4 x 4
    box, outside the timings."""
    from femplast.analysis.patches import PatchAnalysis

    m = build(4, 4 * 6.6, 36)
    pa = PatchAnalysis(m, "square", [1, 2], ALPHAS[:2])
    realization(m, pa, 0, 0, 50)
    reference_tests(m, pa, m.new_state(np.random.default_rng(0)), 4)


def run(realizations: int, ref_count: int) -> dict:
    from femplast.analysis.patches import PatchAnalysis

    warm_up()
    model = build()
    t = time.process_time()
    pa = PatchAnalysis(model, "square", SIZES, ALPHAS)
    for ps in pa.sets:  # the patch operators: once per model, shared by all realizations
        pa.operator(ps, ps.ref)
    setup = time.process_time() - t
    recs = [realization(model, pa, 2024, r) for r in range(realizations)]
    out = dict(benchmark="pipeline", cells=model.num_cells, N=model.params.N,
               realizations=realizations, operators_setup_s=setup, records=recs)
    for key in MEPLS:
        out[f"{key}_median_s"] = float(np.median([r[key] for r in recs]))
    out["total_median_s"] = float(np.median([sum(r[k] for k in MEPLS) for r in recs]))
    out["tests"] = recs[0]["tests"]
    out["us_per_test"] = 1e6 * out["patch_tests_median_s"] / out["tests"]
    out["aqs_us_per_event"] = 1e6 * out["aqs_median_s"] / float(
        np.median([r["aqs_events"] for r in recs]))
    if ref_count:
        st = quenched_states(model, 1)[0]
        out["reference_us_per_test"] = 1e6 * reference_tests(model, pa, st, ref_count)
    return out


def quenched_states(model, count: int = 4) -> list:
    """The quenched states of the first ``count`` realizations (KMC liquid, then T = 0)."""
    from femplast.streams import realization_rng
    from femplast.tensorial.aqs import AQSDriver
    from femplast.tensorial.kmc import KMC, quench

    states = []
    for r in range(count):
        st = model.new_state(realization_rng(2024, r))
        drv = AQSDriver(model, st, 0.0, 1.0, 1)
        KMC(drv, TEMPERATURE, 1.0, window=2 * model.num_cells, tolerance=0.01).run(
            KMC_EVENTS, until_stationary=False)
        quench(model, st, drv)
        states.append(st)
    return states


def aqs_alone(repeats: int, reference_area: float | None = None) -> dict:
    """AQS gamma_ext 0 -> 2 from copies of 4 quenched states, ``repeats`` passes: CPU us per
    event (best, median) and a digest of the end states of the first pass."""
    from femplast.tensorial.aqs import AQSDriver

    warm_up()
    model = build(reference_area=reference_area)
    states = quenched_states(model)
    digest, per_event, events = hashlib.sha256(), [], 0
    for rep in range(repeats):
        t, events = 0.0, 0
        for st0 in states:
            st = copy.deepcopy(st0)
            t0 = time.process_time()
            drv = AQSDriver(model, st, 0.0, DGAMMA, int(round(GAMMA_MAX / DGAMMA)))
            drv.run()
            t += time.process_time() - t0
            events += drv.num_events
            if rep == 0:
                for k, v in sorted(vars(st).items()):
                    if isinstance(v, np.ndarray):
                        digest.update(k.encode() + np.ascontiguousarray(v).tobytes())
                digest.update(f"{st.rng.bit_generator.state} {drv.num_events}".encode())
        per_event.append(1e6 * t / events)
    return dict(aqs_alone_events=events, aqs_alone_us_per_event_best=min(per_event),
                aqs_alone_us_per_event_median=float(np.median(per_event)),
                aqs_alone_digest=digest.hexdigest()[:16])


def table(out: dict) -> str:
    rows = [f"paper case: {out['cells']} cells, N = {out['N']}, CPU seconds per realization "
            f"(median of {out['realizations']}), one core",
            f"{'stage':<28}{'femplast[s]':>12}{'MEPLS[s]':>10}{'MEPLS/femplast':>16}"]
    names = {"kmc_quench": f"KMC {KMC_EVENTS} events + quench",
             "aqs": "AQS gamma 0 -> 2 by 1e-4",
             "patch_tests": f"patch tests ({out['tests']})"}
    for k, name in names.items():
        v = out[f"{k}_median_s"]
        rows.append(f"{name:<28}{v:>12.3f}{MEPLS[k]:>10.2f}{MEPLS[k] / v:>15.1f}x")
    tot, mt = out["total_median_s"], sum(MEPLS.values())
    rows.append(f"{'whole pipeline':<28}{tot:>12.3f}{mt:>10.2f}{mt / tot:>15.1f}x")
    rows.append(f"patch tests: {out['us_per_test']:.2f} us per test (MEPLS "
                f"{1e6 * MEPLS['patch_tests'] / MEPLS_TESTS:.0f} us for its {MEPLS_TESTS}); "
                f"operators (once per model): {out['operators_setup_s']:.2f} s")
    if "reference_us_per_test" in out:
        r = out["reference_us_per_test"]
        rows.append(f"reference implementation (one Python call per test): {r:.1f} us per "
                    f"test, {r / out['us_per_test']:.0f}x the compiled loop")
    ev = [r["aqs_events"] for r in out["records"]]
    rows.append(f"AQS slip events per realization: {int(np.median(ev))}; "
                f"{out['aqs_us_per_event']:.2f} us per event (target <= 2 us)")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--realizations", type=int, default=3)
    ap.add_argument("--reference-tests", type=int, default=400,
                    help="tests timed with the reference implementation (0: none)")
    ap.add_argument("--aqs-alone", type=int, default=0, metavar="R",
                    help="time only the AQS stage from 4 quenched states, best of R passes")
    ap.add_argument("--reference-area", type=float, default=None,
                    help="with --aqs-alone: slip.reference_area (systems per area)")
    ap.add_argument("--json", help="write the results to this JSON file")
    a = ap.parse_args(argv)
    if a.aqs_alone:
        out = dict(benchmark="pipeline_aqs_alone", reference_area=a.reference_area,
                   **aqs_alone(a.aqs_alone, a.reference_area))
        print(f"AQS alone: {out['aqs_alone_events']} events, "
              f"{out['aqs_alone_us_per_event_best']:.3f} us per event (best of {a.aqs_alone}), "
              f"median {out['aqs_alone_us_per_event_median']:.3f}; end states "
              f"{out['aqs_alone_digest']}")
    else:
        out = run(a.realizations, a.reference_tests)
        print(table(out))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
