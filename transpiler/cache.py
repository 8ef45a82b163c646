"""The import hook's cache of compiled code in ``__pycache__``, keyed by source hash, compiler and options."""
from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import struct
import sys
import types
from functools import lru_cache
from typing import NamedTuple

from . import FORMAT_VERSION, __version__

MAGIC = b"DGC\x02"
# magic, compiler+options digest (16), source sha256 (32), source mtime in ns and size (the fast check)
_HEAD = struct.Struct("<4s16s32sQQ")


class Entry(NamedTuple):
    compiler: bytes
    digest: bytes
    stamp: tuple[int, int]
    payload: memoryview

    def code(self) -> types.CodeType | None:
        try:
            code = marshal.loads(self.payload)
        except (EOFError, ValueError, TypeError):
            return None
        return code if isinstance(code, types.CodeType) else None


@lru_cache(maxsize=4096)
def cache_path(source_path: str, options: str) -> str | None:
    """Where the compiled code of ``source_path`` is cached (honours ``sys.pycache_prefix``), or None
    when this interpreter has no bytecode cache tag. Memoized: ``sys.pycache_prefix`` is read once per path."""
    try:
        plain = importlib.util.cache_from_source(source_path)
    except (NotImplementedError, ValueError):
        return None
    return f"{plain[:-len('.pyc')]}.durable-{__version__}-{options}.pyc"


@lru_cache(maxsize=None)
def compiler_id(options: str) -> bytes:
    """Identifies what compiled an entry: this compiler's version and format, the options, and the
    interpreter's bytecode version. A compiler run from a source tree rather than installed (in
    development, where it changes without a new version) adds the stamps of its own files."""
    text = f"{__version__}\0{FORMAT_VERSION}\0{options}\0{sys.implementation.cache_tag}"
    if not _installed():
        text += f"\0{_compiler_stamps()}"
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _installed() -> bool:
    parts = os.path.abspath(__file__).split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts


def _compiler_stamps() -> str:
    """Stamps of the compiler's source files (about 0.1 ms: paid once per process, only in a source tree)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    stamps = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            info = os.stat(os.path.join(folder, name))
            stamps.append(f"{name}:{info.st_mtime_ns}:{info.st_size}")
    return ",".join(stamps)


def source_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def stamp_of(path: str) -> tuple[int, int]:
    """(mtime in ns, size) of the source: equal stamps let an entry be used without hashing the source."""
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size


def read(path: str) -> Entry | None:
    """The entry at ``path``; None when absent or not an entry."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if len(data) < _HEAD.size or data[:4] != MAGIC:
        return None
    _, compiler, digest, mtime, size = _HEAD.unpack_from(data)
    return Entry(compiler, digest, (mtime, size), memoryview(data)[_HEAD.size:])


def store(path: str, compiler: bytes, digest: bytes, stamp: tuple[int, int], code: types.CodeType) -> None:
    """Write the entry atomically (temporary file, then rename); any failure is ignored: a cache that
    cannot be written never breaks an import."""
    if sys.dont_write_bytecode:
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as fh:
            fh.write(_HEAD.pack(MAGIC, compiler, digest, *stamp) + marshal.dumps(code))
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
