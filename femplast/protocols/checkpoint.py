"""Checkpoints of long runs, and clean interruption on SIGINT / SIGTERM.

A checkpoint is a nested structure of dicts, lists, numpy arrays and JSON scalars (the full
:class:`femplast.tensorial.model.State` arrays, the AQS driver's arrays and records, KMC trees,
random generator states, the stage index and the results of finished realizations). It is stored as
one ``.npz`` file (no pickle): every array under a flat name, plus a JSON skeleton that refers
to them. The file is written under ``name.tmp`` and renamed, so a partial checkpoint never
replaces a complete one. Arrays are stored exactly, so a resumed run is bit-identical.

Interruption: :class:`Interrupter` installs handlers for SIGINT and SIGTERM that only set a
flag (a second signal stops at once, from the last checkpoint); long loops call
:meth:`Interrupter.tick` at safe points (event-budget returns of the AQS loop, between
avalanches, every few hundred KMC events). ``tick`` writes a checkpoint when the flag is set
(then raises :class:`Interrupted`) or when ``interval`` seconds have passed since the last
one. The command line turns :class:`Interrupted` into exit code ``128 + signal`` (130 for
SIGINT, 143 for SIGTERM), the shell convention. Before the loop starts (model building,
compilation), :class:`early_interrupts` makes a signal raise :class:`Interrupted` at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from femplast.errors import FemplastInputError

FORMAT_VERSION = 1


class Interrupted(Exception):
    """The run was stopped by a signal after writing its checkpoint."""

    def __init__(self, signum: int, path: Path | None):
        self.signum, self.path = int(signum), path
        name = signal.Signals(self.signum).name
        where = (f"checkpoint written to {path}" if path is not None else
                 "no checkpoint written (a resumed run redoes the work since the last one)")
        super().__init__(f"interrupted by {name}: {where}; continue with "
                         "'python -m femplast CASE --out OUTDIR --resume'")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _flatten(obj, arrays: dict, path: str):
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {"__dict__": {str(k): _flatten(v, arrays, f"{path}/{k}") for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, arrays, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return {"__float__": float(obj).hex()}
    if isinstance(obj, float):
        return {"__float__": obj.hex()}  # exact, and inf/nan safe
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj)} at {path}")


def _unflatten(obj, arrays):
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__float__" in obj:
            return float.fromhex(obj["__float__"])
        if "__dict__" in obj:
            return {k: _unflatten(v, arrays) for k, v in obj["__dict__"].items()}
        if "__list__" in obj:
            return [_unflatten(v, arrays) for v in obj["__list__"]]
    return obj


def save(path: Path, data: dict) -> None:
    """Write ``data`` (nested dicts/lists of arrays and scalars) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    skel = _flatten(data, arrays, "")
    meta = json.dumps(dict(version=FORMAT_VERSION, data=skel))
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, __meta__=np.frombuffer(meta.encode(), np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: the previous checkpoint stays, the error names it
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def load(path: Path, fingerprint: str | None = None) -> dict:
    """Read a checkpoint; a file that is not one (truncated, corrupt, another format, or
    another case: ``fingerprint`` differs) raises FemplastInputError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"format {meta.get('version') if isinstance(meta, dict) else '?'} "
                             f"is not {FORMAT_VERSION}")
        data = _unflatten(meta["data"], arrays)
    except Exception as exc:  # zipfile, numpy, JSON and key errors of a damaged file
        raise FemplastInputError("checkpoint", str(path), "a checkpoint femplast wrote (format "
                                 f"{FORMAT_VERSION}); this file is damaged or foreign "
                                 f"({' '.join(str(exc).split())[:100]}); delete it to restart "
                                 "the interrupted realizations") from None
    found = data.get("fingerprint") if isinstance(data, dict) else None
    if fingerprint is not None and found is not None and found != fingerprint:
        raise FemplastInputError("checkpoint", str(path), "a checkpoint of this case (it was "
                                 "written by another case or --set overrides)")
    return data


def fingerprint(case_dict: dict) -> str:
    """A digest of a resolved case: a checkpoint remembers the case it belongs to."""
    import hashlib

    text = json.dumps(case_dict, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class early_interrupts:
    """SIGINT/SIGTERM raise :class:`Interrupted` at once (no checkpoint exists yet): for the
    time before :class:`Interrupter` takes over (model building, compilation), so that a
    signal then ends the run cleanly too (exit 130/143) instead of a traceback or the FE
    library's abort. PETSc's own handler is switched off (PETSC_OPTIONS) for the same reason."""

    def __enter__(self):
        import threading

        opts = os.environ.get("PETSC_OPTIONS", "")
        if "-no_signal_handler" not in opts:
            os.environ["PETSC_OPTIONS"] = f"{opts} -no_signal_handler".strip()
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Interrupted(signum, None)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def state_arrays(state) -> dict:
    """Every array of a :class:`femplast.tensorial.model.State` plus its random generator state."""
    d = {k: v.copy() for k, v in state.__dict__.items() if isinstance(v, np.ndarray)}
    d["rng_state"] = json.dumps(state.rng.bit_generator.state)
    return d


def restore_state(state, d: dict) -> None:
    for k, v in d.items():
        if k == "rng_state":
            state.rng.bit_generator.state = json.loads(v)
        else:
            cur = getattr(state, k, None)
            if isinstance(cur, np.ndarray) and cur.shape == v.shape:
                cur[...] = v
            else:
                setattr(state, k, np.array(v))


def driver_arrays(drv) -> dict:
    """Every array of an AQS driver (loop state, caches, running averages, buffers) and its
    flushed records and events; generic so that arrays added to the driver are kept too."""
    d = {"arrays": {k: v.copy() for k, v in drv.__dict__.items()
                    if isinstance(v, np.ndarray) and k != "R"}}
    d["records"] = [r.copy() for r in drv.records]
    d["events_i"] = [e.copy() for e in drv.events_i]
    d["events_f"] = [e.copy() for e in drv.events_f]
    d["dgamma"], d["k_end"] = drv.dgamma, drv.k_end
    return d


def restore_driver(drv, d: dict) -> None:
    for k, v in d["arrays"].items():
        cur = getattr(drv, k, None)
        if isinstance(cur, np.ndarray) and cur.shape == v.shape and cur.dtype == v.dtype:
            cur[...] = v
        else:
            setattr(drv, k, np.array(v))
    drv.records = [np.array(r) for r in d["records"]]
    drv.events_i = [np.array(e) for e in d["events_i"]]
    drv.events_f = [np.array(e) for e in d["events_f"]]
    drv.dgamma, drv.k_end = float(d["dgamma"]), int(d["k_end"])


class Interrupter:
    """Signal flag + periodic checkpoints (see the module docstring).

    Args:
        write: callable writing the checkpoint (returns its path).
        interval: seconds between periodic checkpoints (0: only on signals).
    """

    def __init__(self, write, interval: float = 0.0):
        self.write, self.interval = write, float(interval)
        self.signum: int | None = None
        self.last = time.monotonic()
        self._old: dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            # a second signal while a long step (a patch probe, a big avalanche) runs to its
            # safe point: stop now; --resume continues from the last checkpoint
            raise Interrupted(signum, None)
        self.signum = signum

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def tick(self, force: bool = False) -> None:
        """A safe point: checkpoint when due; on a pending signal checkpoint and raise."""
        if self.signum is not None:
            path = self.write()
            raise Interrupted(self.signum, path)
        if force or (self.interval > 0 and time.monotonic() - self.last >= self.interval):
            self.write()
            self.last = time.monotonic()


__all__ = ["Interrupted", "Interrupter", "save", "load"]
