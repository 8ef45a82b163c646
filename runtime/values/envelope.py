"""The snapshot envelope: ``[b"DG", FORMAT, frame, ...]`` opened from outside bytes, and the shape of a frame record.

A frame is ``[ident, fingerprint, state, line, names, values, frees, point, tracked]``: ``ident`` is
``module:qualname``, ``line`` the source line of the suspension (informational), ``names`` the bound
live locals joined by commas, ``values`` their packed values in the same order, ``frees`` is
``[names, cells]`` of the frame's closure cells, or nil. ``point`` is ``[version, key, label]`` of
the suspension point (nil for code compiled before points had labels) and ``tracked`` the locals the
code keeps at that point joined by commas when some of them are unbound (nil when ``names`` are all of
them). Frames of formats 1 and 2 have the first seven fields only.
"""
from __future__ import annotations

from typing import Any

from ..errors import CorruptSnapshotError, SnapshotFormatTooNewError
from . import signing
from .unpack import unpack_checked

MAGIC = b"DG"
FORMAT = 3
"""Format 3: each frame names its point (version, key, label) and the locals its code tracks, so another
version of the code can tell whether it takes the frame (``runtime.compat``). Format 2: each frame has a
memo slot for its own generator (taken before the frame's values), so a closure cell may hold the
generator whose frame it belongs to. Formats 1 and 2 are still read."""
FORMATS = (1, 2, 3)


def corrupt(why: str) -> CorruptSnapshotError:
    return CorruptSnapshotError(f"not a valid durable snapshot: {why}")


def open_snapshot(data: bytes) -> tuple[list[Any], signing.Status]:
    """The unpacked envelope of a snapshot (signature checked, limits applied) and its signature status."""
    envelope, status = unpack_checked(data)
    if not isinstance(envelope, list) or len(envelope) < 3 or envelope[0] != MAGIC:
        raise corrupt("missing the DG header (foreign or damaged data)")
    if not isinstance(envelope[1], int) or isinstance(envelope[1], bool):
        raise corrupt("bad format version")
    if envelope[1] > FORMAT:
        raise SnapshotFormatTooNewError(
            f"snapshot format {envelope[1]} is newer than this runtime supports ({FORMAT}); upgrade the runtime")
    if envelope[1] not in FORMATS:
        raise CorruptSnapshotError(f"snapshot format {envelope[1]} is not supported (expected one of {FORMATS})")
    return envelope, status


def frame_fields(raw: Any) -> list[Any]:
    """A frame record's nine fields (seven in formats 1 and 2, the last two then nil), their types checked
    (names against values, closure names)."""
    if not isinstance(raw, list) or len(raw) not in (7, 9):
        raise corrupt("malformed frame record")
    if len(raw) == 9:
        point, tracked = raw[7], raw[8]
        if not ((point is None or (type(point) is list and len(point) == 3 and all(type(p) is str for p in point)))
                and (tracked is None or type(tracked) is str)):
            raise corrupt("malformed frame record")
    else:
        raw = [*raw, None, None]
    ident, fingerprint, state, line, names, values, frees = raw[:7]
    if not (type(ident) is str and ":" in ident and type(fingerprint) is bytes and type(state) is int
            and (line is None or type(line) is int) and type(names) is str and type(values) is list
            and (frees is None or type(frees) is list)):
        raise corrupt("malformed frame record")
    if frees is not None and (len(frees) != 2 or type(frees[0]) is not list or type(frees[1]) is not list
                              or len(frees[0]) != len(frees[1]) or not all(type(n) is str for n in frees[0])):
        raise corrupt("malformed closure values")
    return raw
