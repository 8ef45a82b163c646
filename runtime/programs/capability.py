"""What code this process runs, as keys: a run a worker could not resume is blocked on its key, and no
worker with that key claims it again until the code (or its migrations) change."""
from __future__ import annotations

import hashlib
import sys

from .. import registry

_cache: tuple[tuple[int, tuple[str, ...]], tuple[str, ...]] | None = None


def key_for(module: str) -> str:
    """``module@digest`` of the versions of the durable functions ``module`` declares as loaded now
    (the module's file when it declares none: a run may be blocked on a class that is gone)."""
    metas = sorted((m.ident, m.version or m.fingerprint.hex(), m.keep_version)
                   for m in list(registry.BY_NAME.values()) if m.module == module and registry.declared_now(m))
    if metas:
        text = repr(metas)
    else:
        loaded = sys.modules.get(module)
        text = repr(getattr(loaded, "__file__", None)) if loaded is not None else "not loaded"
    return f"{module}@{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


def keys() -> tuple[str, ...]:
    """The keys of every loaded module that declares durable functions (recomputed when one is declared)."""
    global _cache
    modules = tuple(sorted(m for m in list(registry.MODULES) if m in sys.modules))
    generation = (registry.DECLARED[0], modules)
    if _cache is None or _cache[0] != generation:
        _cache = (generation, tuple(key_for(m) for m in modules))
    return _cache[1]
