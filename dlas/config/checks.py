"""The error every config check raises, and the two checks the schemas share."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value is outside what its option allows."""


def require(ok: bool, option: str, allowed: str, got: Any) -> None:
    if not ok:
        raise ConfigError(f"{option}={got!r} is invalid: {allowed}.")


def one_of(option: str, value: str, choices: tuple[str, ...]) -> None:
    require(value in choices, option, f"expected one of {', '.join(choices)}", value)
