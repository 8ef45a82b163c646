"""CPython suite tests allowed to fail when compiled: they inspect something no source compiler can
keep (exact frame/code internals of the hidden generator frame).  Keys are full unittest ids.

``COMMON`` applies to every interpreter version; ``BY_VERSION[(major, minor)]`` adds entries for one
version (tests differ between versions).  Keep this list strict: a test that fails because of a
compiler bug does not belong here.
"""
from __future__ import annotations

import sys

COMMON: dict[str, str] = {}

BY_VERSION: dict[tuple[int, int], dict[str, str]] = {}


def allowed_for(version: tuple[int, int] | None = None) -> dict[str, str]:
    """The allowed failures for ``version`` (default: the running interpreter)."""
    version = tuple(version or sys.version_info[:2])  # type: ignore[assignment]
    merged = dict(COMMON)
    merged.update(BY_VERSION.get(version, {}))  # type: ignore[arg-type]
    return merged
