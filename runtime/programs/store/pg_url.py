"""PostgreSQL store URLs: the ``schema`` parameter, the connection string libpq reads, and a form safe to print."""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import StoreError

SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "durable"
MAX_SCHEMA_LENGTH = 55  # PostgreSQL names hold 63 bytes; the notification channel adds "durable_"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
MASK = "***"
FORM = "postgresql://user:password@host:port/database?schema=NAME"


@dataclass(frozen=True)
class Target:
    """Where a PostgreSQL store lives: how to connect, its schema, and its URL as it may be shown."""

    conninfo: str   # the URL without ``schema``, for libpq (it still holds any password)
    schema: str     # the PostgreSQL schema (namespace) holding the store's tables
    display: str    # the URL with its password masked and the schema spelled out


def is_postgres(url: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def parse(url: str) -> Target:
    """Split a store URL into what libpq reads and the schema; StoreError for a bad schema name."""
    try:
        parts = urlsplit(url)
    except ValueError as e:  # a malformed host part ("[::1")
        raise StoreError(f"store URL {masked(url)} cannot be read ({e}): use {FORM}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    rest = [(key, value) for key, value in query if key != "schema"]
    display = _display(parts.scheme.lower(), parts.netloc, parts.path, rest, schema)
    check_schema(schema, display)
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return Target(conninfo=conninfo, schema=schema, display=display)


def check_schema(schema: str, url: str) -> None:
    """A schema name must be a plain identifier (letters, digits, underscores), so it needs no quoting rules."""
    if not _IDENTIFIER.fullmatch(schema) or len(schema) > MAX_SCHEMA_LENGTH:
        raise StoreError(f"store URL {url}: schema {schema!r} is not a plain name: use letters, digits and "
                         f"underscores, not starting with a digit, at most {MAX_SCHEMA_LENGTH} characters "
                         "(?schema=durable)")


def masked(url: str) -> str:
    """``url`` with any password replaced by ``***`` (in the user part and in the query)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        scheme, sep, _ = url.partition("://")
        return f"{scheme}://{MASK}" if sep else MASK
    query = parse_qsl(parts.query, keep_blank_values=True)
    return _display(parts.scheme, parts.netloc, parts.path, query, None)


def _display(scheme: str, netloc: str, path: str, query: list[tuple[str, str]], schema: str | None) -> str:
    shown = [(key, MASK if key in _SECRET_PARAMETERS else value) for key, value in query]
    if schema is not None:
        shown.append(("schema", schema))
    return urlunsplit((scheme, _masked_netloc(netloc), path, urlencode(shown, safe="/,:*"), ""))


def _masked_netloc(netloc: str) -> str:
    userinfo, at, hosts = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return netloc
    user = userinfo.split(":", 1)[0]
    return f"{user}:{MASK}@{hosts}"
