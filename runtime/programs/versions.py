"""What a commit records about the code a run is suspended in: each frame's function, version and point,
and the versions (manifest and source text) the store has not seen yet."""
from __future__ import annotations

import types
from typing import Any

from .. import registry
from ..chaos import coroutine_inner, current_inner
from ..manifest import manifest_json, source_digest
from ..registry import FunctionMeta
from .store.base import CodeVersion


def frames_of(gen: Any) -> list[tuple[FunctionMeta, int]]:
    """The durable frames of ``gen``'s ``yield from`` chain (or of the durable coroutines a coroutine awaits,
    seen through chaos wrappers), outermost first, with the state of each."""
    frames: list[tuple[FunctionMeta, int]] = []
    current: Any = gen
    while True:
        if type(current) is types.GeneratorType:
            code, frame, delegate = current.gi_code, current.gi_frame, current.gi_yieldfrom
        elif type(current) is types.CoroutineType:  # (a restored innermost frame awaits a Resumed: the end)
            code, frame, delegate = current.cr_code, current.cr_frame, current.cr_await
        else:
            break
        meta = registry.BY_CODE.get(id(code))
        if meta is None:
            inner = _chaos_inner(current)
            if inner is not None:
                current = inner
                continue
        if meta is None or frame is None:
            break
        frames.append((meta, frame.f_locals.get("_dg_s", 0)))
        current = delegate
    return frames


def _chaos_inner(obj: types.GeneratorType | types.CoroutineType) -> Any:
    """The compiled generator or coroutine a chaos wrapper drives (None for anything else)."""
    return coroutine_inner(obj) if type(obj) is types.CoroutineType else current_inner(obj)


def describe(frames: list[tuple[FunctionMeta, int]]) -> dict[str, Any]:
    """The execution's columns for ``frames``: ``code_version`` (of the outermost), ``point`` (the innermost's
    label) and ``frames`` (``[function, version, source digest, key, label, line]`` per frame)."""
    rows = [[meta.ident, meta.version, source_digest(meta), *meta.point_of(state), meta.line_of(state)]
            for meta, state in frames]
    return {"code_version": rows[0][1] if rows else None, "point": rows[-1][4] if rows else None,
            "frames": rows or None}


def new_versions(frames: list[tuple[FunctionMeta, int]], recorded: set[tuple[str, str, str]],
                 now: float) -> list[CodeVersion]:
    """The code versions of ``frames`` not in ``recorded`` (what this process knows the store has)."""
    found: list[CodeVersion] = []
    for meta, _ in frames:
        if meta.version is None:
            continue
        key = (meta.ident, meta.version, source_digest(meta))
        if key in recorded or any((v.function, v.version, v.source_digest) == key for v in found):
            continue
        first_line, text = meta.source if meta.source else (None, None)
        found.append(CodeVersion(meta.ident, meta.version, key[2], first_line, text, manifest_json(meta), now))
    return found


def recorded_digest(frames: Any, index: int, function: str, version: str | None) -> str | None:
    """The source digest a run's ``frames`` column (``describe``) records for its frame ``index``, when that
    row is of ``function`` under ``version``; None otherwise (no row, or a damaged one)."""
    row = frames[index] if isinstance(frames, list) and 0 <= index < len(frames) else None
    return row[2] if isinstance(row, list) and len(row) >= 3 and row[:2] == [function, version] else None


def source_lines(first_line: int | None, text: str) -> tuple[int, list[str]]:
    """The lines of a function's recorded source text and the number of the first in its file."""
    return first_line or 1, text.splitlines()
