"""The trust boundary: everything that turns values into bytes and outside bytes back into objects.

This package is the one place a reviewer reads to know what restore may do with data from outside:
the wire format (``wire``, ``encoder``, ``decoder``), the value kinds (``kinds``, ``objects``,
``builtin_kinds``, ``stdlib_kinds``, ``iterator_kinds``, ``code_kinds``, ``class_kinds``), the allow rules (``allow``),
what decoding may cost and run (``bounds``), signing, seals and limits (``signing``, ``seals``,
``settings``, ``unpack``), the snapshot envelope (``envelope``), single values (``single``) and the
inspector (``inspection``). The snapshot engine and the execution layer use it only through the names
below.
"""
from __future__ import annotations

# the kinds of code and of built-ins (the standard library's load on first use)
from . import builtin_kinds, class_kinds, code_kinds, objects  # noqa: F401
from . import settings
from .allow import (CODE_TYPES, allow_modules, disallow_modules, import_allowed, module_allowed, ref_of, resolve,
                    serializable)
from .decoder import Decoder
from .encoder import Encoder
from .envelope import FORMAT, MAGIC, corrupt, frame_fields, open_snapshot
from .hooks import HOOKS
from .kinds import NO_BODY, Kind, Unsupported, register_codec
from .kinds import add as add_kind
from .objects import FALLBACKS
from .settings import Settings, configure, restore_settings
from .signing import sign
from .single import dump_value, load_value

__all__ = [
    "settings", "Settings", "configure", "restore_settings",
    "allow_modules", "disallow_modules", "serializable", "import_allowed", "module_allowed", "ref_of", "resolve",
    "CODE_TYPES",
    "Encoder", "Decoder", "HOOKS", "NO_BODY", "Kind", "Unsupported", "register_codec", "add_kind", "FALLBACKS",
    "MAGIC", "FORMAT", "open_snapshot", "frame_fields", "corrupt", "sign", "dump_value", "load_value",
    "inspect_snapshot", "SnapshotInfo",
]


def __getattr__(name: str) -> object:
    # the inspector is only needed by tools: load it when it is first asked for
    if name in ("inspect_snapshot", "SnapshotInfo"):
        from . import inspection
        return getattr(inspection, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
