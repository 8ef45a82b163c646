"""A damaged store costs only what is damaged: a bad cell costs its row (read with ``damage`` set,
never an exception), a bad file is a clear StoreError wherever it is hit, read-only opens never create
or change anything, and older schemas migrate."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from harness import raw_sql

from runtime.programs.store import Change, SQLiteStore, StepRecord, StoreError, open_store, schema

BIG_DIGITS = "1" + "0" * 5000 + "7"  # more digits than int() and json read by default (4,300)
BIG = 10 ** 5001 + 7


# ============================================================================ one bad row


def _two(store: SQLiteStore) -> tuple[str, str]:
    """A runnable execution with a step and a signal that a test damages, then a healthy one."""
    bad = store.create("m:main", [1], now=1.0).id
    store.commit(Change(bad, 1, fields={"steps_started": 1, "progress": {"n": 1}, "snapshot": b"s"},
                        new_step=StepRecord(bad, 0, "m:work", b"call", {"attempts": 3}, "pending")), now=2.0)
    store.send_signal(bad, "go", {"ok": True}, now=2.0)
    good = store.create("m:main", [2], now=3.0).id
    return bad, good


# (column, SQL value, what the damage says, the field's value once read)
EXECUTION_DAMAGE = [
    ("args", "'not json'", "column 'args' is not valid JSON: Expecting value: line 1 column 1", None),
    ("args", "'{\"a\": 1}'", "column 'args' is not a JSON list", None),
    ("request", "'{'", "column 'request' is not valid JSON", None),
    ("progress", "replace(hex(zeroblob(30000)), '0', '[')", "column 'progress' is not valid JSON", None),
    ("version", "'abc'", "column 'version' holds text", None),
    ("wake_at", "'soon'", "column 'wake_at' holds text", None),
    ("status", "'bogus'", "column 'status' is 'bogus', not one of pending", None),
    ("function", "x'6d3a6d61696e'", "column 'function' holds a blob (6 bytes), not text", None),
    ("function", "CAST(x'ff' AS TEXT)", "column 'function' is not valid UTF-8", None),
    ("snapshot", "'text'", "column 'snapshot' holds text 'text', not a blob", None),
    ("updated_at", "x'00'", "column 'updated_at' holds a blob", None),
    ("cancel_requested", "'yes'", "column 'cancel_requested' holds text", False),
]


@pytest.mark.parametrize("column, value, message, read_as", EXECUTION_DAMAGE,
                         ids=[f"{c}-{i}" for i, (c, *_) in enumerate(EXECUTION_DAMAGE)])
def test_a_damaged_execution_cell_costs_only_its_row(store: SQLiteStore, column: str, value: str, message: str,
                                                     read_as: Any) -> None:
    bad, good = _two(store)
    healthy = store.get(good)
    raw_sql(Path(store.path), f'UPDATE executions SET "{column}" = {value} WHERE id = ?', (bad,))
    listed = store.list()
    assert [e.id for e in listed] == [bad, good]
    damaged = store.get(bad)
    for e in (damaged,) if column == "snapshot" else (listed[0], damaged):  # list() reads no snapshots
        assert e.damage is not None and message in e.damage, e.damage
        assert getattr(e, column) == read_as
        assert e.id == bad and e.steps_started == 1  # the rest of the row is read
    assert store.get(good) == healthy and healthy.damage is None and listed[1].damage is None
    # a worker is never stuck on it: claim hands it over (damage and all) or skips it, then the others
    claimed = [store.claim("w", now=10.0, lease=30.0) for _ in range(2)]
    assert good in [c.id for c in claimed if c is not None]
    for c in claimed:
        if c is not None and c.id == bad and column != "version":  # (claiming rewrites the version)
            assert c.damage is not None and f"column '{column}'" in c.damage
    assert store.steps(bad)[0].damage is None and store.signals(bad)[0].damage is None


STEP_DAMAGE = [
    ("policy", "'nope'", "column 'policy' is not valid JSON", None),
    ("policy", "'[1]'", "column 'policy' is not a JSON object", None),
    ("call", "'text'", "column 'call' holds text 'text', not a blob", None),
    ("status", "'weird'", "column 'status' is 'weird', not one of pending, done, failed", None),
    ("attempts", "'x'", "column 'attempts' holds text", None),
]


@pytest.mark.parametrize("column, value, message, read_as", STEP_DAMAGE,
                         ids=[f"{c}-{i}" for i, (c, *_) in enumerate(STEP_DAMAGE)])
def test_a_damaged_step_cell_costs_only_its_row(store: SQLiteStore, column: str, value: str, message: str,
                                                read_as: Any) -> None:
    bad, _ = _two(store)
    store.commit(Change(bad, 2, new_step=StepRecord(bad, 1, "m:other", b"c", {}, "pending")), now=4.0)
    raw_sql(Path(store.path), f'UPDATE steps SET "{column}" = {value} WHERE "index" = 0')
    steps = store.steps(bad)
    assert [s.index for s in steps] == [0, 1] and steps[1].damage is None
    for s in (steps[0], store.step(bad, 0)):
        assert s is not None and s.damage is not None and message in s.damage, s
        assert getattr(s, column) == read_as and s.function == "m:work"
    assert store.get(bad).damage is None


SIGNAL_DAMAGE = [
    ("payload", "'{\"ok\": tru'", "column 'payload' is not valid JSON", None),
    ("created_at", "'later'", "column 'created_at' holds text", None),
    ("consumed", "x'01'", "column 'consumed' holds a blob", False),
]


@pytest.mark.parametrize("column, value, message, read_as", SIGNAL_DAMAGE, ids=[c for c, *_ in SIGNAL_DAMAGE])
def test_a_damaged_signal_cell_costs_only_its_row(store: SQLiteStore, column: str, value: str, message: str,
                                                  read_as: Any) -> None:
    bad, _ = _two(store)
    store.send_signal(bad, "go", 2, now=5.0)
    raw_sql(Path(store.path), f'UPDATE signals SET "{column}" = {value} WHERE id = 1')
    signals = store.signals(bad)
    assert [s.id for s in signals] == [1, 2] and signals[1].damage is None and signals[1].payload == 2
    assert signals[0].damage is not None and message in signals[0].damage
    assert getattr(signals[0], column) == read_as and signals[0].name == "go"
    if column != "consumed":
        first = store.next_signal(bad, "go")
        assert first is not None and first.id == 1 and first.damage == signals[0].damage


def test_big_ints_and_lone_surrogates_in_json_cells(store: SQLiteStore) -> None:
    bad, _ = _two(store)
    raw_sql(Path(store.path), "UPDATE executions SET progress = ? WHERE id = ?", (f'{{"n": {BIG_DIGITS}}}', bad))
    e = store.get(bad)
    assert e.damage is None and e.progress == {"n": BIG}
    put = store.commit(Change(bad, e.version, fields={"progress": ["\ud800"], "error": "bad \udcff name"}), now=9.0)
    assert put.progress == ["\ud800"] and put.error == "bad \\udcff name" and put.damage is None
    for call in (partial(store.get, "\udcff"), partial(store.send_signal, bad, "\udcff", 1, now=9.0)):
        with pytest.raises(StoreError, match="contains a lone surrogate"):  # text SQLite cannot take
            call()


# ============================================================================ the file


def test_read_only_and_create_false_never_create_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "store.db"
    for options in ({"readonly": True}, {"create": False}):
        with pytest.raises(StoreError, match=f"^no store at {missing} ") as info:
            open_store(f"sqlite:///{missing}", **options)
        assert ".durable/durable.db" in str(info.value) and "--store" in str(info.value)
        with pytest.raises(StoreError, match="no store at"):
            SQLiteStore(tmp_path / "store.db", **options)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_not_a_store_in_either_mode(tmp_path: Path) -> None:
    empty = tmp_path / "store.db"
    empty.touch()
    for options in ({}, {"readonly": True}):
        with pytest.raises(StoreError) as info:
            SQLiteStore(empty, **options)
        assert str(info.value) == (f"{empty} is empty (0 bytes): not a durable store; a store created by durable "
                                   "always has its tables — delete the file to start a new store")
    assert empty.stat().st_size == 0 and [p.name for p in tmp_path.iterdir()] == ["store.db"]


def test_a_new_store_appears_whole_or_not_at_all(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = schema.Migration(schema.LATEST + 1, "broken", ("NOT SQL",))
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + (broken,))
        patch.setattr(schema, "LATEST", schema.LATEST + 1)
        with pytest.raises(StoreError):
            SQLiteStore(db)
    assert list(db.parent.iterdir()) == []  # neither the store nor the file it was built in
    SQLiteStore(db).close()
    assert [p.name for p in db.parent.iterdir()] == ["store.db"]
    assert raw_sql(db, "PRAGMA journal_mode") == [("wal",)] and raw_sql(db, "SELECT value FROM meta") == [
        (str(schema.LATEST),)]


def test_read_only_reads_and_changes_nothing(db: Path) -> None:
    with SQLiteStore(db) as s:
        bad, good = _two(s)
        s._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.read_bytes()
    with SQLiteStore(db, readonly=True) as r:
        assert [e.id for e in r.list()] == [bad, good] and r.get(bad).snapshot == b"s"
        assert r.step(bad, 0) == r.steps(bad)[0] and r.next_signal(bad, "go") == r.signals(bad)[0]
        assert r._conn().execute("PRAGMA query_only").fetchone() == (1,)
        writes = [lambda: r.create("m:main", [], now=1.0), lambda: r.claim("w", now=1.0, lease=1.0),
                  lambda: r.renew("w", [bad], until=1.0), lambda: r.send_signal(bad, "go", 1, now=1.0),
                  lambda: r.request_cancel(bad, now=1.0), lambda: r.commit(Change(bad, 2), now=1.0)]
        for write in writes:
            with pytest.raises(StoreError, match="opened read-only"):
                write()
    assert db.read_bytes() == before


def test_read_only_reads_an_older_schema_as_it_is(db: Path) -> None:
    from test_store import version_1_store

    version_1_store(db)
    before = db.read_bytes()
    with SQLiteStore(db, readonly=True) as r:
        old = r.get("old")
        assert (old.args, old.mac, old.damage) == ([1], None, None) and r.steps("old")[0].mac is None
        assert [e.id for e in r.list()] == ["old"]
    assert db.read_bytes() == before and raw_sql(db, "PRAGMA journal_mode") == [("delete",)]
    raw_sql(db, "ALTER TABLE executions DROP COLUMN waiting_for")  # older still: a column this code needs is missing
    with pytest.raises(StoreError, match="lacks column executions.waiting_for.*run `durable worker`"):
        SQLiteStore(db, readonly=True)


def _zeroed(source: bytes, page: int) -> bytes:
    return source[:page * 4096] + bytes(4096) + source[(page + 1) * 4096:]


def test_a_damaged_file_is_a_store_error_wherever_it_is_hit(db: Path, tmp_path: Path) -> None:
    with SQLiteStore(db) as s:
        ids = [s.create("m:main", ["x" * 400], now=float(i)).id for i in range(25)]
        for execution_id in ids:
            s.send_signal(execution_id, "go", {"a": "y" * 300}, now=30.0)
        s._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    source = db.read_bytes()
    copies = [_zeroed(source, page) for page in range(len(source) // 4096)]
    copies += [os.urandom(8192), source[:len(source) // 2]]
    hit = 0
    for n, data in enumerate(copies):
        path = tmp_path / f"copy{n}.db"
        path.write_bytes(data)
        for readonly in (True, False):
            try:
                with SQLiteStore(path, readonly=readonly) as s:
                    last = ids[-1]
                    reads = [s.list, partial(s.get, last), partial(s.steps, last), partial(s.signals, last),
                             partial(s.next_signal, last, "go")]
                    if not readonly:
                        reads.append(partial(s.claim, "w", now=99.0, lease=1.0))
                    for read in reads:
                        try:
                            read()
                        except StoreError as e:
                            hit += 1
                            assert type(e).__name__ in ("StoreError", "NotFoundError"), e
            except StoreError as e:
                hit += 1
                assert str(path) in str(e)
    assert hit > 10
