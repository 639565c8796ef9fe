"""Content-addressed cache for expensive stage outputs (checkpoints, records, libraries).

An entry's key is a hash of exactly the config that determines it, and a ``.json`` beside it
records how it was made, so a rerun of a finished configuration costs seconds.

Concurrent jobs (a launcher's parallel jobs, several sweep workers on one shared file system)
share the cache safely: every file lands by write-to-temporary + atomic rename, so a reader
sees a complete entry or none, and a job that produces an entry holds the entry's lock
(:func:`entry_lock`, an ``fcntl`` lock on ``<entry>.lock``) from "is it there?" to "it is
there", so two jobs needing the same checkpoint or library make it once: the second waits,
then finds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def config_key(spec: Any) -> str:
    """A stable short hash of a JSON-able description."""
    canonical = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cache:
    root: Path

    def entry(self, kind: str, spec: Any, suffix: str) -> Path:
        key = config_key(spec)
        return Path(self.root) / kind / f"{key}{suffix}"

    def describe(self, path: Path, spec: Any, **facts: Any) -> None:
        """Record next to ``path`` the spec that made it and anything learned on the way."""
        write_atomic(
            path.with_suffix(".json"),
            json.dumps({"spec": spec, **facts}, indent=2, default=str).encode(),
        )

    def lock(self, kind: str, spec: Any, suffix: str) -> Any:
        """The lock of :meth:`entry` ``(kind, spec, suffix)`` (see :func:`entry_lock`)."""
        return entry_lock(self.entry(kind, spec, suffix))

    @staticmethod
    def description(path: Path) -> dict[str, Any]:
        meta = path.with_suffix(".json")
        return json.loads(meta.read_text()) if meta.exists() else {}


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half an entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def entry_lock(path: Path) -> Iterator[float]:
    """Hold the exclusive lock of cache entry ``path`` for the block; yields the seconds waited.

    ``fcntl.lockf`` (POSIX record locks): released by the kernel when the process dies, so a
    killed job never leaves an entry locked; honoured across hosts on NFS (lockd / NFSv4)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(lock_path, "a+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("waiting for %s: another job is making it", path.name)
            fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - started
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)
