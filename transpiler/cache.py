"""The import hook's cache of compiled code in ``__pycache__``, keyed by source hash, compiler and options."""
from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import types

from . import FORMAT_VERSION, __version__

MAGIC = b"DGC\x01"
_KEY_SIZE = 32


def cache_path(source_path: str, options: str) -> str | None:
    """Where the compiled code of ``source_path`` is cached (honours ``sys.pycache_prefix``), or None
    when this interpreter has no bytecode cache tag."""
    try:
        plain = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None
    return f"{plain[:-len('.pyc')]}.durable-{__version__}-{options}.pyc"


def cache_key(data: bytes, options: str) -> bytes:
    """What a cache entry must match: the source bytes, this compiler and the options."""
    digest = hashlib.sha256(data)
    digest.update(f"\0{__version__}\0{FORMAT_VERSION}\0{options}\0{sys.version_info[:2]}".encode())
    return digest.digest()


def load(path: str, key: bytes) -> types.CodeType | None:
    """The cached code at ``path`` if it was written for ``key``; None when absent, stale or damaged."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if data[:len(MAGIC)] != MAGIC or data[len(MAGIC):len(MAGIC) + _KEY_SIZE] != key:
        return None
    try:
        code = marshal.loads(memoryview(data)[len(MAGIC) + _KEY_SIZE:])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, types.CodeType) else None


def store(path: str, key: bytes, code: types.CodeType) -> None:
    """Write the entry atomically (temporary file, then rename); any failure is ignored: a cache that
    cannot be written never breaks an import."""
    if sys.dont_write_bytecode:
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as fh:
            fh.write(MAGIC + key + marshal.dumps(code))
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
