"""The manifest of a durable function: its version and, per suspension point, the label and the contract."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .registry import START, FunctionMeta

MANIFEST_FORMAT = 1
_COMPILER_LOCAL = re.compile(r"_dg_[a-z]+\d+_[0-9a-f]+")


def source_digest(meta: FunctionMeta) -> str:
    """sha256 of the function's source text ("" when the compiler did not record it)."""
    return hashlib.sha256(meta.source[1].encode()).hexdigest() if meta.source else ""


def manifest(meta: FunctionMeta) -> dict[str, Any]:
    """What a version of ``meta`` is, as plain data: stored beside runs (``code_versions``), read by
    ``durable plan``. Pure: it reads the declaration only."""
    first_line = meta.source[0] if meta.source else None
    points = [{"state": 0, "key": START, "display": START, "aliases": [], "line": first_line, "kind": "start",
               "contract": {"locals": list(meta.params), "slots": [], "cells": []}}]
    for state in sorted(meta.states):
        key, display, aliases, cells = meta.points.get(state, (f"#{state}", f"state {state}", (), ()))
        names = meta.states[state]
        points.append({
            "state": state, "key": key, "display": display, "aliases": list(aliases), "line": meta.lines.get(state),
            "kind": "yield from" if state in meta.yield_from else "yield",
            "contract": {"locals": [n for n in names if not _COMPILER_LOCAL.fullmatch(n)],
                         "slots": [{"name": n, "what": meta.compiler_locals.get(n, "")}
                                   for n in names if _COMPILER_LOCAL.fullmatch(n)],
                         "cells": list(cells)}})
    return {"manifest": MANIFEST_FORMAT, "function": meta.ident, "version": meta.version,
            "legacy_fingerprint": meta.fingerprint.hex(), "first_line": first_line,
            "source_digest": source_digest(meta), "keep_version": meta.keep_version, "params": list(meta.params),
            "points": points}


def manifest_json(meta: FunctionMeta) -> str:
    return json.dumps(manifest(meta), sort_keys=True, separators=(",", ":"))
