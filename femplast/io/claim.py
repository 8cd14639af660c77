"""Output directories claimed atomically, so that two runs never share one.

A fresh run creates its directory with ``mkdir`` (atomic: of two runs only one succeeds) or,
for an existing empty ``--out``, creates the lock file ``.femplast.lock`` with ``O_EXCL``
(atomic too). The claim holds an ``flock`` on the lock file while the run lasts; a resumed
run takes the same ``flock`` (non-blocking), so a second run on the directory of a live one
is refused instead of mixing its records in. The lock file is removed when the run ends;
after a crash (SIGKILL) it stays, unlocked (``--resume`` takes it over).

Under MPI only rank 0 touches the file system; :func:`claim_outdir` broadcasts the outcome
so that a refusal reaches every rank (each exits with code 2, none waits).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from femplast.errors import FemplastInputError

LOCK_NAME = ".femplast.lock"


class Claim:
    """A claimed output directory (``path``), locked until :meth:`release`."""

    def __init__(self, path: Path, fd: int | None, created: bool = False):
        self.path, self.fd, self.created = path, fd, created

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()

    def release(self, remove: bool = True) -> None:
        """Unlock; ``remove``: delete the lock file (it exists while a run holds it)."""
        if self.fd is None:
            return
        if remove:
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def discard(self) -> bool:
        """Undo a fresh claim whose run was refused before it produced anything: remove
        ``case.yaml`` (the only file a run writes before its first result) and the directory
        if this claim created it. Returns whether it did; a directory holding anything else
        is left as it is (nothing is lost)."""
        if self.fd is None:
            return False
        names = {p.name for p in self.path.iterdir()}
        if not names <= {"case.yaml", LOCK_NAME}:
            return False
        (self.path / "case.yaml").unlink(missing_ok=True)
        self.release()
        if self.created:
            self.path.rmdir()
        return True


def _bad(value, allowed: str) -> FemplastInputError:
    return FemplastInputError("--out", str(value), allowed)


def _lock(path: Path, create: bool) -> int:
    """Open (``create``: exclusively create) the lock file of ``path`` and flock it."""
    lock = path / LOCK_NAME
    try:
        if create:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        else:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o644)
    except FileExistsError:
        raise _bad(path, "a directory no other run is using (another run claimed it)") \
            from None
    except OSError as exc:
        raise _bad(path, f"a directory you can write ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise _bad(path, "a directory no other run is using (a running femplast holds "
                   f"{LOCK_NAME})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} host {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
    return fd


def _mkdir_parents(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise _bad(p, f"a path whose parent is a directory ({p.parent} is a file)") from None
    except NotADirectoryError:
        raise _bad(p, "a path whose parents are directories (one of them is a file)") \
            from None
    except OSError as exc:
        raise _bad(p, f"a directory you can create ({exc.strerror})") from None


def claim_fresh(out: str | Path | None, name: str, base: str | Path = "runs") -> Claim:
    """A new directory: ``out`` (must not exist, or be empty), else ``base/name[-N]``."""
    if out is None:
        i, p = 1, Path(base) / name
        _mkdir_parents(p)
        while True:
            try:
                os.mkdir(p)
                return Claim(p, _lock(p, create=True), created=True)
            except FileExistsError:
                i += 1
                p = Path(base) / f"{name}-{i}"
            except OSError as exc:
                raise _bad(p, f"a directory you can create ({exc.strerror})") from None
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise _bad(p, "a directory (this is a file)")
    _mkdir_parents(p)
    created = False
    try:
        os.mkdir(p)
        created = True
    except FileExistsError:
        if not p.is_dir():
            raise _bad(p, "a directory (this is a file)") from None
        if any(p.iterdir()):
            raise _bad(p, "a new or empty directory (existing results are never "
                       "overwritten; use --resume to continue an interrupted run)") from None
    except OSError as exc:
        raise _bad(p, f"a directory you can create ({exc.strerror})") from None
    return Claim(p, _lock(p, create=True), created=created)


def claim_resume(out: str | Path | None) -> Claim:
    """The directory of an interrupted run (its case.yaml present, nobody running in it;
    whether it can continue is the run kind's check, e.g. protocols.pipeline.check_resume)."""
    if out is None or not Path(out).is_dir():
        raise FemplastInputError("--resume", out, "with --out naming the existing output "
                                 "directory of the interrupted run")
    p = Path(out)
    if not (p / "case.yaml").is_file():
        raise FemplastInputError("--resume", str(p), "an output directory of an interrupted "
                                 "run (it has no case.yaml)")
    return Claim(p, _lock(p, create=False))


def claim_outdir(comm, out, name: str, resume: bool = False) -> Claim:
    """Claim on rank 0 and tell every rank; a refusal raises FemplastInputError on all."""
    result = None
    claim = None
    if comm.rank == 0:
        try:
            claim = claim_resume(out) if resume else claim_fresh(out, name)
            result = ("ok", str(claim.path))
        except FemplastInputError as exc:
            result = ("error", (exc.key, exc.value, exc.allowed))
    result = comm.bcast(result, root=0)
    if result[0] == "error":
        raise FemplastInputError(*result[1])
    return claim if claim is not None else Claim(Path(result[1]), None)


__all__ = ["Claim", "LOCK_NAME", "claim_fresh", "claim_outdir", "claim_resume"]
