"""Durable stores of executions: the interface, and ``open_store(url)`` to open one by URL.

Store URLs:

- ``sqlite:///relative/path.db``: three slashes, a path relative to the current directory
- ``sqlite:////absolute/path.db``: four slashes, an absolute path
- ``/absolute/path.db``, ``relative/path.db``, ``~/path.db``: a plain filesystem path (SQLite)
- ``postgresql://user:password@host:port/database?schema=NAME`` (or ``postgres://``): a PostgreSQL store
  in schema NAME of that database (``durable`` when not given), shared by workers on many machines; any
  other query parameter goes to libpq (``sslmode=require``, ...). Needs psycopg 3:
  ``pip install 'durable-generators[postgres]'``. Passwords never appear in messages (``***``).

``open_store()`` with no URL uses the environment variable ``DURABLE_STORE`` when it is set and not
empty, else ``sqlite:///.durable/durable.db`` in the current directory. A missing store is created,
with its folder (``SQLiteStore`` itself creates no folder), unless ``create=False``: then it is a
StoreError ("no store at PATH ..."). ``readonly=True`` opens an existing store for reading only
(never created, migrated or changed; PostgreSQL's over read-only connections). ``:memory:`` and
``memory:`` are refused: every thread has its own connection, so each would see its own empty database
(``MemoryStore``, an in-memory store for one process, is made directly: the test kit runs programs on it).
"""
from __future__ import annotations

import os
import re

from .base import (CANCELLED, FAILED, FINISHED, PENDING, SLEEPING, STATUSES, TERMINAL, WAITING, Change,
                   ConflictError, Execution, InvalidStateError, NotFoundError, SchemaTooNewError, Signal,
                   StepRecord, Store, StoreError)
from . import pg_url
from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = [
    "open_store", "Store", "SQLiteStore", "MemoryStore", "Execution", "StepRecord", "Signal", "Change",
    "StoreError", "SchemaTooNewError", "NotFoundError", "ConflictError", "InvalidStateError",
    "PENDING", "SLEEPING", "WAITING", "FINISHED", "FAILED", "CANCELLED", "STATUSES", "TERMINAL",
    "DEFAULT_URL", "ENV_VAR",
]

ENV_VAR = "DURABLE_STORE"
DEFAULT_URL = "sqlite:///.durable/durable.db"
_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or a plain file path"
_POSTGRES_FORM = "postgresql://user@host:port/database?schema=NAME"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(url: str | None = None, *, create: bool = True, readonly: bool = False) -> Store:
    """Open the store at ``url`` (see the module docstring for the forms and the default); with
    ``create=False`` or ``readonly=True`` a missing store is a StoreError and nothing is created."""
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    if pg_url.is_postgres(url):
        return _open_postgres(url, create=create, readonly=readonly)
    path = sqlite_path(url)
    folder = os.path.dirname(path)
    create = create and not readonly
    if folder and create:
        try:
            os.makedirs(folder, exist_ok=True)  # the store's folder is created with it, like .durable/
        except OSError as exc:
            raise StoreError(f"cannot create the folder of store {url!r}: {exc.strerror or exc}") from None
    return SQLiteStore(path, create=create, readonly=readonly)


def _open_postgres(url: str, *, create: bool, readonly: bool) -> Store:
    try:
        from .postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(f"store {pg_url.masked(url)} is a PostgreSQL store, which needs psycopg 3 ({exc}): "
                         "pip install 'durable-generators[postgres]'") from None
    return PostgresStore(url, create=create and not readonly, readonly=readonly)


def sqlite_path(url: str) -> str:
    """The file path a SQLite store URL names; StoreError for anything else."""
    if not url:
        raise StoreError(f"empty store URL: use {_FORMS}")
    match = _SCHEME.match(url)
    if match is None:
        path = os.path.expanduser(url)
    else:
        path = _scheme_path(match.group(1).lower(), url[match.end():], url)
    if path in (":memory:", MemoryStore.url):
        raise StoreError(f"in-memory stores cannot be opened by URL ({url!r}: each connection or process would see "
                         f"its own database; runtime.testing runs programs on a MemoryStore): use {_FORMS}")
    return path


def _scheme_path(scheme: str, rest: str, url: str) -> str:
    if scheme in pg_url.SCHEMES:
        raise StoreError(f"store URL {pg_url.masked(url)} names a PostgreSQL store, not a SQLite file")
    if scheme != "sqlite":
        raise StoreError(f"unknown store URL {pg_url.masked(url)!r}: use {_FORMS}, or {_POSTGRES_FORM}")
    # The part after "sqlite://" is "/" (an empty host) then the path: "/rel.db" or "//abs.db".
    if not rest.startswith("/") or len(rest) == 1:
        raise StoreError(f"store URL {url!r} names no file (SQLite URLs have no host): use {_FORMS}")
    return rest[1:]
