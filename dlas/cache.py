"""Content-addressed cache for expensive stage outputs (checkpoints, records, libraries).

An entry's key is a hash of exactly the config that determines it, and a ``.json`` beside it
records how it was made, so a rerun of a finished configuration costs seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
