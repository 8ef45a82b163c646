"""What code this process runs, as keys: a run a worker could not resume is blocked on its key, and no
worker with that key claims it again until the code (or its migrations) change."""
from __future__ import annotations

import hashlib
import marshal
import sys

from .. import migrations, registry

_cache: tuple[tuple[int, int, tuple[str, ...]], tuple[str, ...]] | None = None


def key_for(module: str) -> str:
    """``module@digest`` of the versions of the durable functions ``module`` declares as loaded now and of
    the migrations registered for them (the module's file when it declares none: a run may be blocked on
    a class that is gone). A new deploy of either gives a new key."""
    metas = sorted((m.ident, m.version or m.fingerprint.hex(), m.keep_version)
                   for m in list(registry.BY_NAME.values()) if m.module == module and registry.declared_now(m))
    moves = sorted((m.function, m.name, m.from_version, m.from_point, m.to_version, _code_digest(m.fn))
                   for function, known in list(migrations.REGISTERED.items())
                   if function.partition(":")[0] == module for m in known)
    if metas or moves:
        text = repr((metas, moves))
    else:
        loaded = sys.modules.get(module)
        text = repr(getattr(loaded, "__file__", None)) if loaded is not None else "not loaded"
    return f"{module}@{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"


def _code_digest(fn: object) -> str:
    code = getattr(fn, "__code__", None)
    data = marshal.dumps(code) if code is not None else repr(fn).encode()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def keys() -> tuple[str, ...]:
    """The keys of every loaded module that declares durable functions (recomputed when one is declared)."""
    global _cache
    modules = tuple(sorted(m for m in list(registry.MODULES) if m in sys.modules))
    generation = (registry.DECLARED[0], migrations.GENERATION[0], modules)
    if _cache is None or _cache[0] != generation:
        _cache = (generation, tuple(key_for(m) for m in modules))
    return _cache[1]
