"""What both stores' versioned schemas share: a migration, the version a store records, refusing a newer one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .base import SchemaTooNewError, StoreError
from .rows import _EXECUTION_COLUMNS, _SIGNAL_COLUMNS, _STEP_COLUMNS


@dataclass(frozen=True)
class Migration:
    """Statements that take a store from ``version - 1`` to ``version``."""

    version: int
    summary: str
    statements: tuple[str, ...]


def recorded_version(row: Sequence[Any] | None, store: str, whole: str) -> int:
    """The version in the meta table's schema_version row; a StoreError saying ``whole`` is damaged
    when there is none."""
    value: Any = row[0] if row else None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StoreError(f"store {store} has no valid schema_version in its meta table "
                         f"({value if row else 'missing'!r}): {whole} is damaged") from None


def check_supported(version: int, latest: int, store: str) -> None:
    """Raise SchemaTooNewError when a newer durable-generators wrote the store."""
    if version > latest:
        raise SchemaTooNewError(f"store {store} has schema version {version}, newer than this "
                                f"durable-generators supports ({latest}): upgrade durable-generators")


def pending(migrations: Sequence[Migration], version: int) -> list[Migration]:
    """The migrations a store at ``version`` still needs, in order."""
    return [m for m in migrations if m.version > version]


def absent_columns(present: Callable[[str], set[str]], added: Mapping[str, frozenset[str]], version: int,
                   latest: int, store: str) -> dict[str, frozenset[str]]:
    """Read-only on an older schema: per table, the columns added since (``added``), which read as NULL;
    ``present(table)`` names the columns the store has. A StoreError when a column this code needs is
    missing (a writing command migrates the store)."""
    absent: dict[str, frozenset[str]] = {}
    for table, names in (("executions", _EXECUTION_COLUMNS), ("steps", _STEP_COLUMNS), ("signals", _SIGNAL_COLUMNS)):
        have = present(table)
        missing = frozenset(name for name in names if name not in have)
        needed = sorted(missing - added.get(table, frozenset()))
        if needed:
            raise StoreError(f"store {store} has schema version {version}, older than this durable-generators "
                             f"({latest}), and lacks column {table}.{needed[0]}: run `durable worker` once "
                             "(opening a store to write migrates it), then read it again")
        absent[table] = missing
    return absent
