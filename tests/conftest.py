"""Make the project root (``runtime``, ``transpiler``) and this directory (``harness``) importable; the
fixtures of the store tests."""
import sys
from pathlib import Path
from typing import Iterator

import pytest

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The path of a SQLite store file in the test's folder (not created)."""
    return tmp_path / "store.db"


@pytest.fixture
def store(db: Path) -> Iterator["SQLiteStore"]:  # noqa: F821 - imported below, once the root is importable
    """A SQLite store at ``db``, closed after the test."""
    from runtime.programs.store import SQLiteStore

    with SQLiteStore(db) as s:
        yield s
