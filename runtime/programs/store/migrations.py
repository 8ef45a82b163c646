"""What both stores' versioned schemas share: a migration, the version a store records, refusing a newer one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .base import SchemaTooNewError, StoreError


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
