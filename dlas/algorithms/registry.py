"""The algorithm registry, in its own module so algorithm modules can register themselves."""

from __future__ import annotations

from ..registry import Registry

ALGORITHMS: Registry = Registry("algorithm")
