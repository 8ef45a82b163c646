"""The Store interface, the same on every store: each test runs on SQLite, on PostgreSQL and on the in-memory
store (``any_store``, ``backend``): create/get/list, commits as compare-and-swap, steps, the claim rules, leases
and takeover, group commits, release, timers, pruning, signals, cancels, racing threads and processes, schema
versions, crash points, notifications, and the indexes that serve the hot queries. What needs SQL on the
store's tables, a second store object on the same store or another process runs on the SQL stores only
(``on_sql_stores``); checks of how the SQL stores encode a cell are made on them alone (``backend.name in
SQL_BACKENDS``)."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import SQL_BACKENDS, Backend
from runtime.programs.store import (CANCELLED, FAILED, FINISHED, PENDING, SLEEPING, WAITING, Change, ConflictError,
                                    Execution, InvalidStateError, NotFoundError, SchemaTooNewError, StepRecord, Store,
                                    StoreError, faults)
from runtime.programs.store.base import CodeVersion

ROOT = Path(__file__).resolve().parent.parent


def step_record(execution_id: str, index: int, **values: Any) -> StepRecord:
    defaults: dict[str, Any] = dict(function="m:work", call=b"\x92\x90\x80", policy={"attempts": 3},
                                    status="pending")
    defaults.update(values)
    return StepRecord(execution_id=execution_id, index=index, **defaults)


def put(store: Store, execution_id: str, *, now: float, **fields: Any) -> Execution:
    """Set fields without a lease (as a test setup would), whatever the version."""
    version = store.get(execution_id).version
    return store.commit(Change(execution_id, version, fields=fields), now=now)


def finish(store: Store, execution: Execution, owner: str, *, now: float, **fields: Any) -> Execution:
    """The lease holder ends the run and gives the lease back."""
    return store.commit(Change(execution.id, execution.version, owner=owner, release=True,
                               fields={"status": FINISHED, **fields}), now=now)


def count(backend: Backend, table: str, where: str = "TRUE") -> int:
    return int(backend.sql(f"SELECT count(*) FROM {table} WHERE {where}")[0][0])


def on_sql_stores(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` on the SQL stores only: it needs SQL on the tables, a second store object or another process."""
    return pytest.mark.parametrize("backend", SQL_BACKENDS, indirect=True)(test)


@pytest.fixture
def other_store(backend: Backend, any_store: Store) -> Iterator[Store]:
    """A second store object on the same store, as another process would open it."""
    store = backend.open()
    try:
        yield store
    finally:
        store.close()


# ============================================================================ create, get, list

def test_create_and_get(any_store: Store) -> None:
    created = any_store.create("m:main", (1, "two", [3]), now=100.0)
    assert len(created.id) == 12 and int(created.id, 16) >= 0
    assert (created.function, created.args, created.status, created.version) == ("m:main", [1, "two", [3]], PENDING, 1)
    assert (created.created_at, created.updated_at) == (100.0, 100.0)
    assert created.snapshot is None and created.cancel_requested is False and created.lease_owner is None
    assert created.held_until is None and created.damage is None and created.taken_from is None
    assert any_store.get(created.id) == created
    with_kwargs = any_store.create("m:main", [1], kwargs={"b": 2}, mac=b"seal", now=101.0)
    assert with_kwargs.args == {"args": [1], "kwargs": {"b": 2}} and with_kwargs.mac == b"seal"


def test_create_with_id_and_duplicates(any_store: Store) -> None:
    any_store.create("m:main", [], now=1.0, execution_id="order-7")
    assert any_store.get("order-7").function == "m:main"
    with pytest.raises(ConflictError, match="already exists"):
        any_store.create("m:other", [], now=2.0, execution_id="order-7")
    assert any_store.get("order-7").function == "m:main"
    ids = {any_store.create("m:main", [], now=3.0).id for _ in range(50)}
    assert len(ids) == 50
    with pytest.raises(ValueError):
        any_store.create("m:main", [], now=1.0, execution_id="")


def test_create_rejects_bad_args(any_store: Store) -> None:
    with pytest.raises(TypeError):
        any_store.create("m:main", "abc", now=1.0)
    with pytest.raises(TypeError, match="JSON-compatible"):
        any_store.create("m:main", [object()], now=1.0)
    assert any_store.list() == []


def test_get_unknown(any_store: Store) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        any_store.get("nope")


def test_list_order_filter_limit_and_no_blobs(any_store: Store) -> None:
    later = any_store.create("m:b", [], now=20.0)
    first = any_store.create("m:a", [], now=10.0)
    same_time = any_store.create("m:c", [], now=20.0)  # ties: in the order they were created
    put(any_store, later.id, now=21.0, status=FINISHED, snapshot=b"snap", result=b"res", error_value=b"ev",
        progress={"done": 1})
    listed = any_store.list()
    assert [e.id for e in listed] == [first.id, later.id, same_time.id]
    assert listed[1].status == FINISHED and listed[1].progress == {"done": 1}
    assert (listed[1].snapshot, listed[1].result, listed[1].error_value) == (None, None, None)
    assert any_store.get(later.id).snapshot == b"snap"
    assert [e.id for e in any_store.list(status=FINISHED)] == [later.id]
    assert [e.id for e in any_store.list(limit=1)] == [first.id]
    assert any_store.list(status=WAITING) == []
    with pytest.raises(ValueError):
        any_store.list(status="bogus")


def test_unicode_and_big_values_round_trip(any_store: Store) -> None:
    e = any_store.create("m:main", ["é ✓ \U0001f600", 2 ** 80, -1.5, None, True], now=1.0)
    assert any_store.get(e.id).args == ["é ✓ \U0001f600", 2 ** 80, -1.5, None, True]
    written = put(any_store, e.id, now=2.0, error="nul \x00 and \udcff", progress=["\ud800"],
                  snapshot=bytes(range(256)) * 100)
    assert written.progress == ["\ud800"] and written.snapshot == bytes(range(256)) * 100
    assert written.error is not None and written.error.startswith("nul ") and "\\udcff" in written.error
    with pytest.raises(StoreError, match="lone surrogate"):
        any_store.get("\udcff")


# ============================================================================ commit

def test_commit_writes_fields_and_bumps_version(any_store: Store, backend: Backend) -> None:
    e = any_store.create("m:main", [], now=1.0)
    fields = dict(status=WAITING, snapshot=b"\x00\x01", request={"kind": "wait", "name": "go"}, wake_at=50.0,
                  waiting_for="go", steps_started=2, progress=[1, "x"], error="e", cancel_requested=True,
                  held_until=7.5, mac=b"m")
    written = any_store.commit(Change(e.id, 1, fields=fields), now=5.0)
    assert written.version == 2 and written.updated_at == 5.0 and written.created_at == 1.0
    for name, value in fields.items():
        assert getattr(written, name) == value
    assert any_store.get(e.id) == written
    if backend.name in SQL_BACKENDS:  # how the cells are encoded
        [(cancel, request)] = backend.sql("SELECT cancel_requested, request FROM executions")
        assert (bool(cancel), request) == (True, '{"kind": "wait", "name": "go"}')


def test_commit_refuses_fields_it_does_not_own(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=1.0)
    for bad in ({"version": 9}, {"id": "x"}, {"lease_owner": "w"}, {"created_at": 0.0}, {"nope": 1},
                {"status": "bogus"}, {"damage": "x"}, {"taken_from": "w"}):
        with pytest.raises(ValueError):
            any_store.commit(Change(e.id, 1, fields=bad), now=2.0)
    with pytest.raises(TypeError, match="JSON-compatible"):
        any_store.commit(Change(e.id, 1, fields={"progress": {1, 2}}), now=2.0)
    assert any_store.get(e.id).version == 1


def test_commit_unknown_execution(any_store: Store) -> None:
    with pytest.raises(NotFoundError):
        any_store.commit(Change("nope", 1, fields={"status": FINISHED}), now=1.0)


@on_sql_stores
def test_cas_conflict_between_two_stores_writes_nothing(any_store: Store, other_store: Store,
                                                        backend: Backend) -> None:
    one, two = any_store, other_store
    e = one.create("m:main", [], now=1.0)
    s1 = one.send_signal(e.id, "go", 1, now=2.0)
    s2 = one.send_signal(e.id, "go", 2, now=2.0)
    v = one.get(e.id).version
    assert two.get(e.id).version == v
    one.commit(Change(e.id, v, fields={"steps_started": 1}, new_step=step_record(e.id, 0),
                      consume_signal=s1.id), now=3.0)
    with pytest.raises(ConflictError, match=f"version {v + 1}, not {v}"):
        two.commit(Change(e.id, v, fields={"steps_started": 2, "status": FAILED},
                          new_step=step_record(e.id, 1), consume_signal=s2.id), now=4.0)
    after = two.get(e.id)
    assert (after.version, after.steps_started, after.status, after.updated_at) == (v + 1, 1, PENDING, 3.0)
    assert [s.index for s in two.steps(e.id)] == [0]
    assert [(s.id, s.consumed) for s in two.signals(e.id)] == [(s1.id, True), (s2.id, False)]
    assert count(backend, "steps") == 1
    assert backend.sql("SELECT id FROM signals WHERE NOT consumed") == [(s2.id,)]


def test_commit_with_owner_needs_the_live_lease(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    claimed = any_store.claim("w1", now=0.0, lease=10.0)
    assert claimed is not None
    v = claimed.version
    with pytest.raises(ConflictError, match="leased to 'w1', not 'w2'"):
        any_store.commit(Change(e.id, v, owner="w2", fields={"status": FINISHED}), now=5.0)
    with pytest.raises(ConflictError, match="lapsed"):
        any_store.commit(Change(e.id, v, owner="w1", fields={"status": FINISHED}), now=10.0)
    assert any_store.get(e.id).status == PENDING and any_store.get(e.id).version == v
    done = any_store.commit(Change(e.id, v, owner="w1", fields={"status": FINISHED}, release=True), now=9.5)
    assert (done.status, done.lease_owner, done.lease_until, done.version) == (FINISHED, None, None, v + 1)
    with pytest.raises(ConflictError, match="leased to nobody"):
        any_store.commit(Change(e.id, v + 1, owner="w1", fields={}), now=9.6)


def test_commit_consuming_a_consumed_signal_rolls_back(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    sig = any_store.send_signal(e.id, "go", None, now=1.0)
    any_store.commit(Change(e.id, 1, consume_signal=sig.id), now=2.0)
    with pytest.raises(ConflictError, match="already consumed"):
        any_store.commit(Change(e.id, 2, fields={"status": FINISHED}, new_step=step_record(e.id, 0),
                                consume_signal=sig.id), now=3.0)
    after = any_store.get(e.id)
    assert (after.version, after.status) == (2, PENDING)
    assert any_store.steps(e.id) == []
    other = any_store.create("m:main", [], now=0.0)
    with pytest.raises(ConflictError):  # a signal of another execution
        any_store.commit(Change(other.id, 1, consume_signal=any_store.send_signal(e.id, "go", 1, now=4.0).id),
                         now=5.0)
    assert any_store.get(other.id).version == 1


def test_a_commit_by_the_lease_holder_extends_its_lease(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    claimed = any_store.claim("w", now=1.0, lease=10.0)
    assert claimed is not None and claimed.lease_until == 11.0
    after = any_store.commit(Change(e.id, claimed.version, owner="w", lease_until=15.0), now=5.0)
    assert (after.lease_owner, after.lease_until) == ("w", 15.0)
    assert any_store.claim("other", now=12.0, lease=10.0) is None  # still ours at 12
    released = any_store.commit(Change(e.id, after.version, owner="w", release=True, lease_until=99.0), now=13.0)
    assert (released.lease_owner, released.lease_until) == (None, None)  # release wins


def test_a_commit_with_its_base_returns_what_it_wrote(any_store: Store) -> None:
    """With ``Change.base`` a store may build what commit returns instead of reading the row back: it must
    be the row as written all the same, with what others changed meanwhile (a cancel) included."""
    fields = dict(status=WAITING, snapshot=b"frames", request={"kind": "wait", "name": "go"}, wake_at=50.0,
                  waiting_for="go", steps_started=1, progress={"n": 2 ** 70}, error="nul \x00, \udcff")
    for many in (False, True):
        e = any_store.create("m:main", [1], now=0.0)
        claimed = any_store.claim("w", now=1.0, lease=10.0, execution_id=e.id)
        assert claimed is not None
        any_store.request_cancel(e.id, now=2.0)  # someone else, after the worker read the row
        change = Change(e.id, claimed.version, owner="w", fields=fields, lease_until=30.0, base=claimed,
                        new_step=step_record(e.id, 0))
        result = any_store.commit_many([change], now=3.0)[0] if many else any_store.commit(change, now=3.0)
        assert result == any_store.get(e.id)
        assert isinstance(result, Execution) and result.cancel_requested and result.lease_until == 30.0
        assert (result.version, result.updated_at, result.progress) == (claimed.version + 1, 3.0, {"n": 2 ** 70})
    # fields that the row's own columns also report (a cancel set by the writer itself)
    e = any_store.create("m:main", [1], now=0.0)
    claimed = any_store.claim("w", now=1.0, lease=10.0, execution_id=e.id)
    assert claimed is not None
    change = Change(e.id, claimed.version, owner="w", fields={"cancel_requested": True}, base=claimed)
    result = any_store.commit(change, now=3.0)
    assert result.cancel_requested and result == any_store.get(e.id)


# ============================================================================ group commit

def test_commit_many_writes_the_good_changes_and_reports_the_others(any_store: Store, backend: Backend) -> None:
    ids = [any_store.create("m:main", [], now=0.0).id for _ in range(5)]
    claimed = {e.id: e for e in any_store.claim_many("w", now=1.0, lease=100.0, limit=5)}
    assert set(claimed) == set(ids)
    consumed = any_store.send_signal(ids[4], "go", 1, now=1.0)
    any_store.commit(Change(ids[4], claimed[ids[4]].version, owner="w", consume_signal=consumed.id), now=1.5)
    changes = [
        Change(ids[0], claimed[ids[0]].version, owner="w", fields={"status": FINISHED}, release=True,
               new_step=step_record(ids[0], 0)),
        Change(ids[1], claimed[ids[1]].version - 1, owner="w", fields={"status": FAILED},
               new_step=step_record(ids[1], 0)),                                  # a stale version
        Change(ids[2], claimed[ids[2]].version, owner="someone else", fields={"status": FAILED}),
        Change("nope", 1, fields={"status": FINISHED}),                          # no such execution
        Change(ids[3], claimed[ids[3]].version, owner="w", fields={"steps_started": 1, "progress": [3]},
               new_step=step_record(ids[3], 0), lease_until=200.0),
        Change(ids[4], claimed[ids[4]].version + 1, owner="w", fields={"status": FINISHED},
               consume_signal=consumed.id),                                      # its signal is already consumed
    ]
    results = any_store.commit_many(changes, now=2.0)
    assert [type(r).__name__ for r in results] == ["Execution", "ConflictError", "ConflictError", "NotFoundError",
                                                   "Execution", "ConflictError"]
    assert isinstance(results[0], Execution) and results[0].status == FINISHED and results[0].lease_owner is None
    assert isinstance(results[4], Execution) and results[4].lease_until == 200.0 and results[4].progress == [3]
    assert "version" in str(results[1]) and "leased to 'w'" in str(results[2]) and "already consumed" in str(results[5])
    assert [any_store.get(i).status for i in ids] == [FINISHED, PENDING, PENDING, PENDING, PENDING]
    assert [any_store.get(i).version for i in ids[1:3]] == [claimed[i].version for i in ids[1:3]]
    assert any_store.get(ids[4]).version == claimed[ids[4]].version + 1  # only the earlier commit
    assert sorted(step.execution_id for i in ids for step in any_store.steps(i)) == sorted([ids[0], ids[3]])
    if backend.name in SQL_BACKENDS:
        assert sorted(row[0] for row in backend.sql("SELECT execution_id FROM steps")) == sorted([ids[0], ids[3]])
    assert any_store.commit_many([], now=3.0) == []


def test_commit_many_refuses_two_changes_for_one_execution(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    with pytest.raises(ValueError, match="at most one change per execution"):
        any_store.commit_many([Change(e.id, 1), Change(e.id, 1)], now=1.0)
    assert any_store.get(e.id).version == 1


def test_commit_many_writes_nothing_when_a_step_cannot_be_written(any_store: Store) -> None:
    a = any_store.create("m:main", [], now=0.0).id
    b = any_store.create("m:main", [], now=0.0).id
    any_store.commit(Change(b, 1, new_step=step_record(b, 0)), now=1.0)
    with pytest.raises(StoreError, match="step 0"):
        any_store.commit_many([Change(a, 1, fields={"status": FINISHED}),
                               Change(b, 2, new_step=step_record(b, 0))], now=2.0)
    assert any_store.get(a).status == PENDING and any_store.get(b).version == 2


# ============================================================================ steps

def test_steps_insert_update_and_read(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    v = any_store.commit(Change(e.id, 1, fields={"steps_started": 1},
                                new_step=step_record(e.id, 0, started_at=1.0)), now=1.0).version
    v = any_store.commit(Change(e.id, v, new_step=step_record(e.id, 1, function="m:other")), now=2.0).version
    any_store.commit(Change(e.id, v, step_update=(0, {"status": "done", "attempts": 1, "result": b"r",
                                                     "finished_at": 3.0, "policy": {"attempts": 5}})), now=3.0)
    steps = any_store.steps(e.id)
    assert [(s.index, s.function, s.status) for s in steps] == [(0, "m:work", "done"), (1, "m:other", "pending")]
    assert steps[0] == StepRecord(execution_id=e.id, index=0, function="m:work", call=b"\x92\x90\x80",
                                  policy={"attempts": 5}, status="done", attempts=1, result=b"r",
                                  started_at=1.0, finished_at=3.0)
    assert any_store.step(e.id, 1) == steps[1]
    assert any_store.step(e.id, 2) is None and any_store.steps("nope") == []


def test_step_errors_write_nothing(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    any_store.commit(Change(e.id, 1, new_step=step_record(e.id, 0)), now=1.0)
    with pytest.raises(StoreError, match="step 0"):
        any_store.commit(Change(e.id, 2, fields={"steps_started": 9}, new_step=step_record(e.id, 0)), now=2.0)
    with pytest.raises(StoreError, match="no step 5"):
        any_store.commit(Change(e.id, 2, fields={"steps_started": 9}, step_update=(5, {"attempts": 1})), now=2.0)
    with pytest.raises(ValueError):
        any_store.commit(Change(e.id, 2, step_update=(0, {"index": 3})), now=2.0)
    with pytest.raises(ValueError):
        any_store.commit(Change(e.id, 2, new_step=step_record("other", 1)), now=2.0)
    with pytest.raises(ValueError):
        any_store.commit(Change(e.id, 2, new_step=step_record(e.id, 1), step_update=(0, {})), now=2.0)
    assert any_store.get(e.id).version == 2 and any_store.get(e.id).steps_started == 0
    assert len(any_store.steps(e.id)) == 1


def _commit_one(store: Store, change: Change, many: bool, now: float) -> Execution:
    """``change`` by ``commit``, or by ``commit_many`` along with a change of another run (written only if it is)."""
    if not many:
        return store.commit(change, now=now)
    other = store.create("m:other", [], now=now)
    try:
        results = store.commit_many([Change(other.id, 1, fields={"status": FINISHED}), change], now=now)
    except BaseException:
        assert store.get(other.id).version == 1  # the whole group failed
        raise
    assert store.get(other.id).status == FINISHED
    result = results[1]
    assert isinstance(result, Execution)
    return result


@pytest.mark.parametrize("many", [False, True], ids=["commit", "commit_many"])
def test_a_change_inserts_and_updates_several_steps(any_store: Store, backend: Backend, many: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.programs.store import statements
    reached: list[str] = []
    monkeypatch.setattr(statements, "point", reached.append)
    e = any_store.create("m:main", [], now=0.0)
    v = _commit_one(any_store, Change(e.id, 1, new_steps=(step_record(e.id, 0), step_record(e.id, 1))), many,
                    now=1.0).version
    assert [s.index for s in any_store.steps(e.id)] == [0, 1]
    reached.clear()
    change = Change(e.id, v, fields={"steps_started": 5}, new_step=step_record(e.id, 2, function="m:two"),
                    new_steps=(step_record(e.id, 3), step_record(e.id, 4, started_at=2.0)),
                    step_update=(0, {"status": "done", "attempts": 1, "result": b"r0"}),
                    step_updates=((1, {"status": "failed", "error": "boom"}), (4, {"attempts": 1})))
    written = _commit_one(any_store, change, many, now=2.0)
    assert (written.version, written.steps_started) == (v + 1, 5) and written == any_store.get(e.id)
    steps = any_store.steps(e.id)
    assert [(s.index, s.function, s.status, s.attempts) for s in steps] == [
        (0, "m:work", "done", 1), (1, "m:work", "failed", 0), (2, "m:two", "pending", 0),
        (3, "m:work", "pending", 0), (4, "m:work", "pending", 1)]
    assert (steps[0].result, steps[1].error, steps[4].started_at) == (b"r0", "boom", 2.0)
    assert any_store.step(e.id, 3) == step_record(e.id, 3)
    if backend.name in SQL_BACKENDS:  # the crash point after the steps is reached once, after all of them
        assert reached.count("commit.step_written") == 1
        assert reached.index("commit.updated") < reached.index("commit.step_written")


@pytest.mark.parametrize("many", [False, True], ids=["commit", "commit_many"])
def test_a_change_whose_steps_cannot_all_be_written_writes_none(any_store: Store, many: bool) -> None:
    e = any_store.create("m:main", [], now=0.0)
    v = any_store.commit(Change(e.id, 1, new_steps=(step_record(e.id, 0), step_record(e.id, 1))), now=1.0).version
    before = any_store.steps(e.id)
    good = dict(fields={"steps_started": 9}, step_update=(0, {"status": "done"}))
    failing: list[tuple[type[Exception], str, Change]] = [
        (StoreError, "step 1", Change(e.id, v, **good, new_steps=(step_record(e.id, 2), step_record(e.id, 1)))),
        (StoreError, "step 3", Change(e.id, v, **good, new_steps=(step_record(e.id, 3), step_record(e.id, 3)))),
        (StoreError, "no step 7", Change(e.id, v, **good, new_steps=(step_record(e.id, 2),),
                                         step_updates=((1, {"attempts": 2}), (7, {"attempts": 1})))),
        (StoreError, "step 1", Change(e.id, v, **good, step_updates=((1, {"status": None}),))),
        (StoreError, "step 2", Change(e.id, v, **good, new_steps=(step_record(e.id, 2, policy=None),))),
        (ValueError, "belongs to execution", Change(e.id, v, **good, new_steps=(step_record(e.id, 2),
                                                                               step_record("other", 3)))),
        (ValueError, "not both", Change(e.id, v, new_step=step_record(e.id, 2), step_update=(0, {"attempts": 1}))),
    ]
    for error, message, change in failing:
        with pytest.raises(error, match=message):
            _commit_one(any_store, change, many, now=2.0)
        assert any_store.get(e.id).version == v and any_store.get(e.id).steps_started == 0
        assert any_store.steps(e.id) == before


# ============================================================================ claim and leases

def _sleeping(store: Store, wake_at: float | None, **extra: Any) -> str:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=SLEEPING, wake_at=wake_at, **extra)
    return e.id


def _waiting(store: Store, wake_at: float | None = None, signal: str | None = None, consumed: bool = False,
             **extra: Any) -> str:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=WAITING, waiting_for="go", wake_at=wake_at, **extra)
    if signal is not None:
        sent = store.send_signal(e.id, signal, None, now=2.0)
        if consumed:
            store.commit(Change(e.id, store.get(e.id).version, consume_signal=sent.id), now=2.0)
    return e.id


def _waiting_any(store: Store, wake_at: float | None = None, signal: str | None = None, consumed: bool = False,
                 waits: list[str] | None = None) -> str:
    """A run waiting for any of several names (waits; no waiting_for), as a race of waits leaves it."""
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=WAITING, waits=["a", "b"] if waits is None else waits, wake_at=wake_at)
    if signal is not None:
        sent = store.send_signal(e.id, signal, None, now=2.0)
        if consumed:
            store.commit(Change(e.id, store.get(e.id).version, consume_signal=sent.id), now=2.0)
    return e.id


def _terminal(store: Store, status: str) -> str:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=SLEEPING, wake_at=0.0)
    store.request_cancel(e.id, now=1.0)
    put(store, e.id, now=1.0, status=status)
    return e.id


def _pending(store: Store, **extra: Any) -> str:
    e = store.create("m:main", [], now=0.0)
    if extra:
        put(store, e.id, now=0.0, **extra)
    return e.id


def _leased(store: Store, until: float) -> str:
    e = store.create("m:main", [], now=0.0)
    claimed = store.claim("holder", now=until - 100.0, lease=100.0, execution_id=e.id)
    assert claimed is not None
    return e.id


RUNNABLE_CASES: dict[str, tuple[Callable[[Store], str], bool]] = {
    "pending": (lambda s: _pending(s), True),
    "sleeping, due": (lambda s: _sleeping(s, 10.0), True),
    "sleeping, due exactly now": (lambda s: _sleeping(s, 50.0), True),
    "sleeping, not due": (lambda s: _sleeping(s, 51.0), False),
    "sleeping, no timer": (lambda s: _sleeping(s, None), False),
    "sleeping, not due, cancel requested": (lambda s: _sleeping(s, 99.0, cancel_requested=True), True),
    "waiting, nothing arrived": (lambda s: _waiting(s), False),
    "waiting, timer not due": (lambda s: _waiting(s, wake_at=60.0), False),
    "waiting, timer due": (lambda s: _waiting(s, wake_at=40.0), True),
    "waiting, its signal arrived": (lambda s: _waiting(s, signal="go"), True),
    "waiting, another signal arrived": (lambda s: _waiting(s, signal="other"), False),
    "waiting, its signal already consumed": (lambda s: _waiting(s, signal="go", consumed=True), False),
    "waiting for several, nothing arrived": (lambda s: _waiting_any(s, wake_at=60.0), False),
    "waiting for several, one of them arrived": (lambda s: _waiting_any(s, signal="b"), True),
    "waiting for several, another signal arrived": (lambda s: _waiting_any(s, signal="go"), False),
    "waiting for several, theirs consumed": (lambda s: _waiting_any(s, signal="a", consumed=True), False),
    "waiting for several, timer due": (lambda s: _waiting_any(s, wake_at=40.0), True),
    "waiting for several, no names": (lambda s: _waiting_any(s, signal="a", waits=[]), False),
    "finished, cancel requested": (lambda s: _terminal(s, FINISHED), False),
    "failed, cancel requested": (lambda s: _terminal(s, FAILED), False),
    "cancelled, cancel requested": (lambda s: _terminal(s, CANCELLED), False),
    "pending, held": (lambda s: _pending(s, held_until=60.0), False),
    "pending, hold over": (lambda s: _pending(s, held_until=50.0), True),
    "sleeping, due, held": (lambda s: _sleeping(s, 10.0, held_until=60.0), False),
    "waiting, its signal arrived, held": (lambda s: _waiting(s, signal="go", held_until=60.0), False),
    "waiting, timer due, held": (lambda s: _waiting(s, wake_at=40.0, held_until=60.0), False),
    "pending, held, cancel requested": (lambda s: _pending(s, held_until=60.0, cancel_requested=True), True),
    "pending, leased": (lambda s: _leased(s, until=50.01), False),
    "pending, lease lapsed exactly now": (lambda s: _leased(s, until=50.0), True),
}


@pytest.mark.parametrize("case", list(RUNNABLE_CASES))
def test_claim_runnable_rules(any_store: Store, case: str) -> None:
    make, runnable = RUNNABLE_CASES[case]
    execution_id = make(any_store)
    before = any_store.get(execution_id)
    claimed = any_store.claim("w", now=50.0, lease=5.0, execution_id=execution_id)
    assert (claimed is not None) is runnable
    assert any_store.claim("w", now=50.0, lease=5.0) is None  # nothing else to claim
    assert any_store.claim_many("w", now=50.0, lease=5.0, limit=5) == []
    if claimed is not None:
        assert claimed.id == execution_id and claimed.version == before.version + 1
        assert (claimed.lease_owner, claimed.lease_until) == ("w", 55.0)
    else:
        assert any_store.get(execution_id) == before


@pytest.mark.parametrize("case", [case for case, (_, runnable) in RUNNABLE_CASES.items() if runnable])
def test_claim_many_finds_every_kind_of_runnable(any_store: Store, case: str) -> None:
    execution_id = RUNNABLE_CASES[case][0](any_store)
    claimed = any_store.claim_many("w", now=50.0, lease=5.0, limit=10)
    assert [e.id for e in claimed] == [execution_id]


def test_claim_most_overdue_first(any_store: Store) -> None:
    pending = any_store.create("m:main", [], now=10.0).id
    early_sleeper = _sleeping(any_store, 5.0)
    signalled = _waiting(any_store, signal="go")  # runnable since its last transition at 1.0
    late_sleeper = _sleeping(any_store, 12.0)
    future_sleeper = _sleeping(any_store, 30.0)
    order = []
    while (claimed := any_store.claim("w", now=15.0, lease=100.0)) is not None:
        order.append(claimed.id)
    assert order == [signalled, early_sleeper, pending, late_sleeper]
    assert future_sleeper not in order


def test_claim_many_takes_the_most_overdue_up_to_its_limit(any_store: Store) -> None:
    pending = any_store.create("m:main", [], now=10.0).id
    early_sleeper = _sleeping(any_store, 5.0)
    signalled = _waiting(any_store, signal="go")
    late_sleeper = _sleeping(any_store, 12.0)
    _sleeping(any_store, 30.0)
    tied = [any_store.create("m:main", [], now=10.0).id for _ in range(3)]  # same time: in creation order
    first = any_store.claim_many("w", now=15.0, lease=100.0, limit=3)
    assert [e.id for e in first] == [signalled, early_sleeper, pending]
    assert all(e.lease_owner == "w" and e.lease_until == 115.0 and e.taken_from is None for e in first)
    rest = any_store.claim_many("w2", now=15.0, lease=100.0, limit=100)
    assert [e.id for e in rest] == [*tied, late_sleeper]
    assert any_store.claim_many("w3", now=15.0, lease=100.0, limit=100) == []
    assert any_store.claim_many("w3", now=15.0, lease=100.0, limit=0) == []


def test_claim_returns_the_full_execution(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    put(any_store, e.id, now=1.0, snapshot=b"frames", result=b"r")
    claimed = any_store.claim("w", now=2.0, lease=1.0)
    assert claimed is not None and claimed.snapshot == b"frames" and claimed == any_store.get(e.id)


def test_lease_excludes_other_owners_until_it_lapses(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    first = any_store.claim("w1", now=0.0, lease=10.0)
    assert first is not None and first.lease_until == 10.0 and first.taken_from is None
    assert any_store.claim("w2", now=5.0, lease=10.0) is None
    assert any_store.claim("w2", now=9.99, lease=10.0, execution_id=e.id) is None
    assert any_store.claim("w1", now=5.0, lease=10.0) is None  # even its owner cannot claim it twice
    second = any_store.claim("w2", now=10.0, lease=10.0)
    assert second is not None and second.lease_owner == "w2" and second.version == first.version + 1
    assert second.taken_from == "w1"  # taken over from w1, whose lease lapsed
    assert any_store.get(e.id).taken_from is None  # not a column: only the claim says it
    with pytest.raises(ConflictError):
        any_store.commit(Change(e.id, first.version, owner="w1", fields={"status": FINISHED}), now=11.0)
    again = any_store.claim("w2", now=30.0, lease=10.0)
    assert again is not None and again.taken_from is None  # its own lapsed lease: nothing taken from anyone


def test_claim_many_takes_over_lapsed_leases(any_store: Store) -> None:
    ids = [any_store.create("m:main", [], now=0.0).id for _ in range(3)]
    assert len(any_store.claim_many("w1", now=0.0, lease=10.0, limit=2)) == 2
    taken = any_store.claim_many("w2", now=10.0, lease=10.0, limit=10)
    assert sorted((e.id, e.taken_from) for e in taken) == sorted(
        [(ids[0], "w1"), (ids[1], "w1"), (ids[2], None)])


def test_renew(any_store: Store) -> None:
    a = any_store.create("m:main", [], now=0.0).id
    b = any_store.create("m:main", [], now=0.0).id
    assert any_store.claim("w1", now=0.0, lease=10.0, execution_id=a) is not None
    assert any_store.claim("w2", now=0.0, lease=10.0, execution_id=b) is not None
    version = any_store.get(a).version
    assert any_store.renew("w1", [a, b, "nope"], until=30.0) == [b, "nope"]
    assert any_store.get(a).lease_until == 30.0 and any_store.get(b).lease_until == 10.0
    assert any_store.get(a).version == version  # renewing is not a transition
    assert any_store.claim("w2", now=20.0, lease=10.0, execution_id=a) is None
    assert any_store.renew("w1", [], until=40.0) == []
    assert any_store.renew("w2", [b], until=50.0) == []  # lapsed at 10, but nobody took it: still w2's
    any_store.commit(Change(a, version, owner="w1", release=True), now=21.0)
    assert any_store.renew("w1", [a], until=40.0) == [a]


def test_release_gives_leases_up_without_a_transition(any_store: Store) -> None:
    ids = [any_store.create("m:main", [], now=0.0).id for _ in range(4)]
    mine = {e.id: e for e in any_store.claim_many("w1", now=0.0, lease=100.0, limit=3)}
    theirs = any_store.claim("w2", now=0.0, lease=100.0)
    assert theirs is not None and set(mine) | {theirs.id} == set(ids)
    first, *others = sorted(mine)
    assert any_store.release("w1", [first, theirs.id, "nope"]) == 1
    released = any_store.get(first)
    assert (released.lease_owner, released.lease_until, released.version) == (None, None, mine[first].version)
    assert any_store.get(theirs.id).lease_owner == "w2"
    again = any_store.claim("w3", now=1.0, lease=100.0)  # at once, long before the lease would have lapsed
    assert again is not None and again.id == first and again.taken_from is None
    assert any_store.release("w1") == 2 and any_store.release("w1") == 0
    assert all(any_store.get(i).lease_owner is None for i in others)
    assert any_store.release("w1", []) == 0
    # the old holder's version is still current: a lease it gave up is not a conflict until someone claims
    assert any_store.commit(Change(others[0], mine[others[0]].version, fields={}), now=2.0).version == \
        mine[others[0]].version + 1


def test_claim_argument_errors(any_store: Store) -> None:
    with pytest.raises(NotFoundError):
        any_store.claim("w", now=0.0, lease=1.0, execution_id="nope")
    with pytest.raises(ValueError):
        any_store.claim("w", now=0.0, lease=0.0)
    with pytest.raises(ValueError):
        any_store.claim("", now=0.0, lease=1.0)
    with pytest.raises(ValueError):
        any_store.claim_many("w", now=0.0, lease=-1.0, limit=3)


def test_a_wait_for_several_names_round_trips_and_wakes_on_any(any_store: Store, backend: Backend) -> None:
    execution_id = _waiting_any(any_store, waits=["approve", "reject"])
    e = any_store.get(execution_id)
    assert (e.waits, e.waiting_for) == (["approve", "reject"], None) and any_store.list()[0].waits == e.waits
    if backend.name in SQL_BACKENDS:  # how the cell is encoded
        assert backend.sql("SELECT waits FROM executions") == [('["approve", "reject"]',)]
    for bad in ("approve", ["approve", 2], {"approve": 1}):
        with pytest.raises(TypeError):
            put(any_store, execution_id, now=2.0, waits=bad)
    assert any_store.claim("w", now=3.0, lease=1.0) is None
    any_store.send_signal(execution_id, "reject", None, now=4.0)
    assert [c.id for c in any_store.claim_many("w", now=5.0, lease=1.0, limit=5)] == [execution_id]


@on_sql_stores
def test_a_damaged_waits_cell_costs_only_its_row(any_store: Store, backend: Backend) -> None:
    cells = ["not json", '{"a": 1}', "5", '[["a"]]', '[1, "a"]']  # the last: its string element still wakes it
    damaged = [_waiting_any(any_store, signal="a") for _ in cells]
    for execution_id, text in zip(damaged, cells):
        backend.sql("UPDATE executions SET waits = ? WHERE id = ?", (text, execution_id))
    if backend.name == "sqlite":
        damaged.append(_waiting_any(any_store, signal="a"))
        backend.sql("UPDATE executions SET waits = x'ff5b' WHERE id = ?", (damaged[-1],))
    woken = _waiting_any(any_store, signal="b")
    for execution_id in damaged:
        e = any_store.get(execution_id)
        assert e.damage is not None and "column 'waits' " in e.damage and e.waits is None
    claimed = [e.id for e in any_store.claim_many("w", now=10.0, lease=1.0, limit=20)]
    assert sorted(claimed) == sorted([damaged[4], woken])


# ============================================================================ code versions and blocked runs

CODE = dict(code_version="ab12", point="wait for approval", frames=[["m:main", "ab12", "d1", "k1", "wait", 7, 2]],
            blocked_on=["m@2", "m@1", "m@2"], migrations=[{"migration": "m:fix", "at": 5.0}])


def code_version(version: str = "ab12", digest: str = "d1", *, at: float = 1.0, manifest: str = "{}",
                 function: str = "m:main") -> CodeVersion:
    return CodeVersion(function, version, digest, 3, "def main():\n    yield 'é'\n", manifest, at)


def test_code_columns_round_trip(any_store: Store, backend: Backend) -> None:
    e = any_store.create("m:main", [], now=0.0)
    assert (e.code_version, e.point, e.frames, e.blocked_on, e.migrations) == (None,) * 5
    claimed = any_store.claim("w", now=1.0, lease=10.0)
    assert claimed is not None
    for base in (None, claimed):  # read back, or built from the base
        written = any_store.commit(Change(e.id, any_store.get(e.id).version, fields=CODE, base=base), now=2.0)
        assert (written.code_version, written.point, written.frames, written.migrations) == \
            (CODE["code_version"], CODE["point"], CODE["frames"], CODE["migrations"])
        assert written.blocked_on == ["m@1", "m@2"]  # a set: distinct keys, sorted
        assert any_store.get(e.id) == written and any_store.list()[0] == dataclasses.replace(written, snapshot=None)
    if backend.name in SQL_BACKENDS:  # how the cell is encoded
        assert backend.sql("SELECT blocked_on FROM executions") == [('["m@1", "m@2"]',)]
    cleared = put(any_store, e.id, now=3.0, blocked_on=None, frames=[], point=None)
    assert (cleared.blocked_on, cleared.frames, cleared.point) == (None, [], None)
    for bad in ({"frames": "x"}, {"migrations": {"a": 1}}, {"blocked_on": "m@1"}, {"blocked_on": ["m@1", 2]}):
        with pytest.raises(TypeError):
            put(any_store, e.id, now=4.0, **bad)
    with pytest.raises(TypeError, match="CodeVersion.recorded_at"):
        any_store.commit(Change(e.id, cleared.version, versions=[dataclasses.replace(code_version(), recorded_at="x")]),
                         now=4.0)
    assert any_store.get(e.id) == cleared


def test_versions_are_recorded_once_first_writer_wins(any_store: Store, backend: Backend) -> None:
    a, b, c = (any_store.create("m:main", [], now=0.0) for _ in range(3))
    any_store.commit(Change(a.id, 1, versions=[code_version(manifest="first"), code_version(manifest="second")]),
                     now=1.0)
    any_store.commit(Change(b.id, 1, versions=[code_version(manifest="third")]), now=2.0)
    # a group commit: two changes with the same new version, and one that fails with a version of its own
    results = any_store.commit_many([
        Change(a.id, 2, versions=[code_version("cd34", manifest="first"), code_version()]),
        Change(b.id, 1, versions=[code_version("ef56")]),  # a stale version
        Change(c.id, 1, versions=[code_version("cd34", manifest="second")]),
    ], now=3.0)
    assert [type(r).__name__ for r in results] == ["Execution", "ConflictError", "Execution"]
    signal = any_store.send_signal(c.id, "go", None, now=4.0)
    any_store.commit(Change(c.id, 2, consume_signal=signal.id), now=4.0)
    results = any_store.commit_many([Change(c.id, 3, consume_signal=signal.id, versions=[code_version("0a0a")])],
                                    now=5.0)  # its signal is already consumed: the savepoint undoes its version
    assert isinstance(results[0], ConflictError)
    with pytest.raises(ConflictError):
        any_store.commit(Change(a.id, 1, versions=[code_version("0b0b")]), now=6.0)
    recorded = [("ab12", "first"), ("cd34", "first")]
    assert sorted((v.version, v.manifest) for v in any_store.code_versions("m:main")) == recorded
    if backend.name in SQL_BACKENDS:
        assert sorted(backend.sql("SELECT version, manifest FROM code_versions")) == recorded


@on_sql_stores
def test_stores_racing_to_record_a_version_record_it_once(any_store: Store, other_store: Store,
                                                          backend: Backend) -> None:
    ids = [any_store.create("m:main", [], now=0.0).id for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def record(store: Store, execution_id: str, manifest: str) -> None:
        barrier.wait()
        results.append(store.commit(Change(execution_id, 1, versions=[code_version(manifest=manifest),
                                                                      code_version("cd34")]), now=1.0))

    threads = [threading.Thread(target=record, args=(store, execution_id, str(i)))
               for i, (store, execution_id) in enumerate(zip((any_store, other_store), ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [type(r).__name__ for r in results] == ["Execution", "Execution"]
    assert len(backend.sql("SELECT manifest FROM code_versions WHERE version = 'ab12'")) == 1
    assert count(backend, "code_versions") == 2


def test_code_version_lookups(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    assert any_store.code_version("m:main", "ab12") is None and any_store.code_versions("m:main") == []
    recorded = [code_version(digest="d2", at=5.0), code_version(digest="d1", at=7.0), code_version("cd34", at=6.0),
                code_version(function="m:other", at=1.0),
                CodeVersion("m:main", "ee00", "d9", None, None, '{"points": []}', 9.5)]
    any_store.commit(Change(e.id, 1, versions=recorded), now=10.0)
    assert any_store.code_version("m:main", "ab12", "d1") == recorded[1]
    assert any_store.code_version("m:main", "ab12") == recorded[0]  # the earliest recorded text
    assert any_store.code_version("m:main", "ee00") == recorded[4]
    assert any_store.code_version("m:main", "ab12", "d3") is None and any_store.code_version("m:x", "ab12") is None
    assert any_store.code_versions("m:main") == [recorded[0], recorded[2], recorded[1], recorded[4]]
    assert any_store.code_versions("m:other") == [recorded[3]] and any_store.code_versions("m:nope") == []


def test_claim_skips_runs_blocked_for_its_keys(any_store: Store) -> None:
    blocked = _pending(any_store, blocked_on=["app@1", "lib@7"])
    free = any_store.create("m:main", [], now=5.0).id
    assert [e.id for e in any_store.claim_many("w", now=10.0, lease=1.0, limit=5, skip_keys=["x@0", "lib@7"])] == \
        [free]
    any_store.release("w")
    put(any_store, free, now=11.0, status=FINISHED)
    assert any_store.claim("w", now=20.0, lease=1.0, skip_keys=("app@1",)) is None
    assert any_store.claim("w", now=20.0, lease=1.0, execution_id=blocked, skip_keys=["app@1"]) is None
    taken = any_store.claim("w", now=20.0, lease=1.0, skip_keys=["app@2"])  # other code: not blocked for it
    assert taken is not None and taken.id == blocked and taken.blocked_on == ["app@1", "lib@7"]
    assert [e.id for e in any_store.claim_many("w", now=30.0, lease=1.0, limit=5)] == [blocked]  # no keys
    any_store.request_cancel(blocked, now=31.0)
    served = any_store.claim("w", now=40.0, lease=1.0, skip_keys=["app@1"])  # a cancel is always served
    assert served is not None and served.id == blocked
    with pytest.raises(TypeError, match="skip_keys"):
        any_store.claim("w", now=50.0, lease=1.0, skip_keys="app@1")


@on_sql_stores
def test_damaged_code_cells_show_as_damage_and_block_no_one(any_store: Store, backend: Backend) -> None:
    cells = {"frames": "not json", "blocked_on": '{"k@1": 1}', "migrations": "5"}
    damaged = [_pending(any_store) for _ in cells]
    for execution_id, (column, text) in zip(damaged, cells.items()):
        backend.sql(f"UPDATE executions SET {column} = ? WHERE id = ?", (text, execution_id))
        e = any_store.get(execution_id)
        assert e.damage is not None and f"column {column!r} is not" in e.damage and getattr(e, column) is None
    odd = {"not json": None, "[1, 2]": None, '["k@1", 2]': "k@1", '["a", "k@1"]': "k@1", '[["k@1"]]': None}
    rows = {_pending(any_store, blocked_on=["x@0"]): text for text in odd}
    for execution_id, text in rows.items():
        backend.sql("UPDATE executions SET blocked_on = ? WHERE id = ?", (text, execution_id))
    if backend.name == "sqlite":
        rows[_pending(any_store)] = None
        backend.sql("UPDATE executions SET blocked_on = x'ff5b' WHERE id = ?", (list(rows)[-1],))
    claimed = {e.id for e in any_store.claim_many("w", now=10.0, lease=1.0, limit=20, skip_keys=["k@1"])}
    # blocked: the lists holding the key (even beside an element that is not a string, which is damage)
    assert claimed == set(damaged) | {i for i, text in rows.items() if odd.get(text) is None}
    assert any_store.get(damaged[1]).damage is not None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_damaged_code_versions_rows_are_read_with_their_damage(any_store: Store, backend: Backend) -> None:
    e = any_store.create("m:main", [], now=0.0)
    any_store.commit(Change(e.id, 1, versions=[code_version(), code_version("cd34", at=2.0)]), now=1.0)
    backend.sql("UPDATE code_versions SET first_line = 'three', source = x'ff' WHERE version = 'ab12'")
    read = any_store.code_version("m:main", "ab12")
    assert read is not None and read.damage is not None and "column 'first_line'" in read.damage
    assert (read.first_line, read.source, read.manifest, read.recorded_at) == (None, None, "{}", 1.0)
    assert [v.damage is None for v in any_store.code_versions("m:main")] == [False, True]


# ============================================================================ timers and pruning

def test_next_wake(any_store: Store) -> None:
    assert any_store.next_wake(0.0) is None
    _sleeping(any_store, 40.0)
    _waiting(any_store, wake_at=30.0)
    _waiting(any_store)                       # no timeout: no timer
    _sleeping(any_store, 5.0)                 # already due: claim's business, not a future timer
    done = _sleeping(any_store, 1.0)
    put(any_store, done, now=2.0, status=FINISHED, wake_at=12.0)  # an ended run's stale timer does not count
    assert any_store.next_wake(10.0) == 30.0
    _pending(any_store, held_until=25.0)
    assert any_store.next_wake(10.0) == 25.0
    leased = _leased(any_store, until=20.0)
    assert any_store.next_wake(10.0) == 20.0
    assert any_store.next_wake(20.0) == 25.0  # strictly after now
    any_store.release("holder", [leased])
    assert any_store.next_wake(10.0) == 25.0
    assert any_store.next_wake(40.0) is None


def _ended_with_history(store: Store, status: str, *, at: float) -> str:
    e = store.create("m:main", [], now=0.0)
    store.send_signal(e.id, "go", 1, now=0.5)
    put(store, e.id, now=at, status=status)
    store.commit(Change(e.id, store.get(e.id).version, new_step=step_record(e.id, 0)), now=at)
    return e.id


def test_prune_deletes_ended_runs_in_batches(any_store: Store, backend: Backend) -> None:
    old = [_ended_with_history(any_store, status, at=10.0 + i)
           for i, status in enumerate([FINISHED, FAILED, CANCELLED, FINISHED, FINISHED])]
    recent = _ended_with_history(any_store, FINISHED, at=100.0)
    live = [_pending(any_store), _sleeping(any_store, 5.0), _waiting(any_store, signal="go")]
    any_store.commit(Change(live[0], any_store.get(live[0]).version, new_step=step_record(live[0], 0)), now=1.0)
    assert any_store.prune(finished_before=50.0, batch=2) == 5
    assert sorted(e.id for e in any_store.list()) == sorted([recent, *live])
    left = any_store.list()
    assert sum(len(any_store.steps(e.id)) for e in left) == 2 and sum(len(any_store.signals(e.id)) for e in left) == 2
    if backend.name in SQL_BACKENDS:
        assert count(backend, "steps") == 2 and count(backend, "signals") == 2  # recent's and the live runs'
    for gone in old:
        assert any_store.steps(gone) == [] and any_store.signals(gone) == []
    assert any_store.prune(finished_before=50.0) == 0
    assert any_store.prune(finished_before=1000.0, batch=1) == 1
    assert sorted(e.id for e in any_store.list()) == sorted(live)
    with pytest.raises(ValueError):
        any_store.prune(finished_before=1.0, batch=0)


# ============================================================================ signals and cancellation

def test_signals_fifo_and_consumption(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    a1 = any_store.send_signal(e.id, "a", {"n": 1}, now=1.0)
    b1 = any_store.send_signal(e.id, "b", [1, 2], now=2.0)
    a2 = any_store.send_signal(e.id, "a", "two", now=3.0)
    assert (a1.name, a1.payload, a1.created_at, a1.consumed) == ("a", {"n": 1}, 1.0, False)
    assert a1.id < b1.id < a2.id
    assert any_store.next_signal(e.id, "a") == a1
    any_store.commit(Change(e.id, 1, consume_signal=a1.id), now=4.0)
    assert any_store.next_signal(e.id, "a") == a2
    assert any_store.next_signal(e.id, "b") == b1
    assert any_store.next_signal(e.id, "c") is None
    assert [(s.id, s.consumed) for s in any_store.signals(e.id)] == [(a1.id, True), (b1.id, False), (a2.id, False)]
    assert any_store.signals("nope") == [] and any_store.next_signal("nope", "a") is None
    assert any_store.get(e.id).version == 2  # sending signals does not touch the execution
    assert any_store.next_signal(e.id, "a", exclude=a2.id) is None  # delivered, not yet consumed
    a3 = any_store.send_signal(e.id, "a", 3, now=5.0)
    assert any_store.next_signal(e.id, "a", exclude=a2.id) == a3


def test_send_signal_errors_write_nothing(any_store: Store, backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        any_store.send_signal("nope", "go", None, now=1.0)
    done = any_store.create("m:main", [], now=0.0)
    put(any_store, done.id, now=1.0, status=FINISHED)
    with pytest.raises(InvalidStateError, match="finished"):
        any_store.send_signal(done.id, "go", None, now=2.0)
    with pytest.raises(TypeError):
        any_store.send_signal(done.id, "go", object(), now=2.0)
    with pytest.raises(ValueError):
        any_store.send_signal(done.id, "", None, now=2.0)
    assert any_store.signals(done.id) == []
    if backend.name in SQL_BACKENDS:
        assert count(backend, "signals") == 0


def test_request_cancel(any_store: Store) -> None:
    e = any_store.create("m:main", [], now=0.0)
    put(any_store, e.id, now=1.0, status=SLEEPING, wake_at=1000.0)
    claimed = any_store.claim("w", now=2.0, lease=10.0)
    assert claimed is None
    marked = any_store.request_cancel(e.id, now=3.0)
    assert marked.cancel_requested is True and marked.version == 2 and marked.updated_at == 1.0
    claimed = any_store.claim("w", now=4.0, lease=10.0)
    assert claimed is not None and claimed.cancel_requested
    assert any_store.request_cancel(e.id, now=5.0).cancel_requested  # idempotent, and does not need the lease
    ended = any_store.commit(Change(e.id, claimed.version, owner="w", fields={"status": CANCELLED}, release=True),
                             now=6.0)
    assert ended.status == CANCELLED
    with pytest.raises(InvalidStateError, match="cancelled"):
        any_store.request_cancel(e.id, now=7.0)
    with pytest.raises(NotFoundError):
        any_store.request_cancel("nope", now=7.0)
    other = any_store.create("m:main", [], now=0.0)
    put(any_store, other.id, now=1.0, status=FAILED)
    with pytest.raises(InvalidStateError):
        any_store.request_cancel(other.id, now=2.0)
    assert any_store.get(other.id).cancel_requested is False


@on_sql_stores
def test_a_signal_racing_a_timeout_is_kept_or_refused_never_lost(any_store: Store, other_store: Store) -> None:
    """A waiting run's timeout fires (a worker claims it and ends the run) while a signal arrives: the
    signal is either stored before the run ended (and stays readable) or refused; the run is claimed once."""
    for attempt in range(15):
        execution_id = _waiting(any_store, wake_at=5.0)
        start = threading.Barrier(2)
        outcome: dict[str, Any] = {}

        def signal() -> None:
            start.wait()
            try:
                outcome["signal"] = other_store.send_signal(execution_id, "go", attempt, now=6.0)
            except InvalidStateError as e:
                outcome["signal"] = e

        def time_out() -> None:
            start.wait()
            claimed: list[Execution] = []
            deadline = time.monotonic() + 5.0
            while not claimed and time.monotonic() < deadline:  # a claim skips a row being written: poll
                claimed = any_store.claim_many("w", now=6.0, lease=10.0, limit=5)
            outcome["claimed"] = claimed
            for e in claimed:
                finish(any_store, e, "w", now=6.5, error="timed out")

        threads = [threading.Thread(target=signal), threading.Thread(target=time_out)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [e.id for e in outcome["claimed"]] == [execution_id]
        stored = any_store.signals(execution_id)
        if isinstance(outcome["signal"], InvalidStateError):
            assert stored == [] and "finished" in str(outcome["signal"])
        else:
            assert [s.id for s in stored] == [outcome["signal"].id] and not stored[0].consumed
        assert any_store.get(execution_id).status == FINISHED
        with pytest.raises(InvalidStateError):
            any_store.send_signal(execution_id, "go", 0, now=7.0)


# ============================================================================ many workers

def test_threads_share_a_store(any_store: Store) -> None:
    ids = {any_store.create("m:main", [], now=float(i)).id for i in range(40)}
    claimed: list[str] = []
    errors: list[BaseException] = []
    all_started = threading.Barrier(4)

    def work(name: str) -> None:
        try:
            all_started.wait()
            while (e := any_store.claim(name, now=100.0, lease=50.0)) is not None:
                finish(any_store, e, name, now=100.0)
                claimed.append(e.id)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(claimed) == sorted(ids)
    assert {e.status for e in any_store.list()} == {FINISHED}


@on_sql_stores
def test_threads_racing_claim_many_take_each_run_once(any_store: Store, other_store: Store) -> None:
    ids = {any_store.create("m:main", [], now=float(i)).id for i in range(120)}
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    all_started = threading.Barrier(6)

    def work(name: str, store: Store) -> None:
        mine = claimed.setdefault(name, [])
        try:
            all_started.wait()
            while batch := store.claim_many(name, now=100.0, lease=50.0, limit=7):
                mine += [e.id for e in batch]
                results = store.commit_many([Change(e.id, e.version, owner=name, release=True,
                                                    fields={"status": FINISHED, "error": name}) for e in batch],
                                            now=100.0)
                assert all(isinstance(r, Execution) for r in results), results
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"t{i}", (any_store, other_store)[i % 2])) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = [i for taken in claimed.values() for i in taken]
    assert sorted(everything) == sorted(ids)  # each exactly once
    for e in any_store.list():
        assert e.status == FINISHED and e.id in claimed[e.error or ""]


CLAIM_LOOP = """
import sys, time
from pathlib import Path
from runtime.programs.store import open_store, Change, FINISHED
url, name, go = sys.argv[1:4]
store = open_store(url)
Path(go + "." + name).touch()
while not Path(go).exists():
    time.sleep(0.005)
while batch := store.claim_many(name, now=100.0, lease=1000.0, limit=int(name[1:]) % 3 + 1):
    for e in batch:
        store.commit(Change(e.id, e.version, owner=name, fields={"status": FINISHED, "error": name}, release=True),
                     now=101.0)
        print(e.id, flush=True)
"""


def start_together(code: str, args: list[list[str]], go: Path) -> list[tuple[str, str, int]]:
    """Run one process per argument list, release them at once; (stdout, stderr, returncode) each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DURABLE_STORE", None)
    names = [a[1] for a in args]
    workers = [subprocess.Popen([sys.executable, "-c", code, *a, str(go)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for a in args]
    try:
        while not all(Path(f"{go}.{name}").exists() for name in names):
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            threading.Event().wait(0.01)
        go.touch()
        outputs = [w.communicate(timeout=60) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    return [(out, err, w.returncode) for (out, err), w in zip(outputs, workers)]


@on_sql_stores
def test_processes_claim_each_execution_once(any_store: Store, backend: Backend, tmp_path: Path) -> None:
    ids = {any_store.create("m:main", [], now=float(i)).id for i in range(60)}
    results = start_together(CLAIM_LOOP, [[backend.url, f"p{i}"] for i in range(4)], tmp_path / "go")
    assert [rc for _, _, rc in results] == [0] * 4, [err for _, err, _ in results]
    claimed = [line for out, _, _ in results for line in out.split()]
    assert sorted(claimed) == sorted(ids)
    finished = any_store.list(status=FINISHED)
    assert len(finished) == 60
    by_worker = {f"p{i}": out.split() for i, (out, _, _) in enumerate(results)}
    assert all(e.id in by_worker[e.error or ""] for e in finished)


OPEN_AND_CREATE = """
import sys, time
from pathlib import Path
from runtime.programs.store import open_store
url, name, go = sys.argv[1:4]
Path(go + "." + name).touch()
while not Path(go).exists():
    time.sleep(0.002)
open_store(url).create("m:main", [name], now=1.0, execution_id=name)
"""


@on_sql_stores
def test_processes_create_a_new_store_together(backend: Backend, tmp_path: Path) -> None:
    results = start_together(OPEN_AND_CREATE, [[backend.url, f"p{i}"] for i in range(4)], tmp_path / "go")
    assert [rc for _, _, rc in results] == [0] * 4, [err for _, err, _ in results]
    with backend.open() as s:
        assert sorted(e.id for e in s.list()) == ["p0", "p1", "p2", "p3"]
    assert backend.sql("SELECT value FROM meta") == [(str(backend.schema_module.LATEST),)]


@pytest.mark.skipif(not hasattr(os, "fork"),
                    reason="os.fork does not exist on this platform (Windows): no child can inherit a connection, "
                           "so the store's re-open-after-fork path cannot run")
@on_sql_stores
def test_forked_child_opens_its_own_connection(any_store: Store) -> None:
    parent = any_store.create("m:main", [], now=1.0)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        ok = False
        try:
            ok = any_store.get(parent.id) == parent and any_store.create("m:child", [], now=2.0).function == "m:child"
            any_store.close()  # closes the child's connections, not those inherited from the parent
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [e.function for e in any_store.list()] == ["m:main", "m:child"]
    assert any_store.get(parent.id) == parent  # the parent's connection still works


# ============================================================================ notifications

def test_wait_for_work_returns_after_its_timeout_or_when_stopped(any_store: Store) -> None:
    stop = threading.Event()
    started = time.monotonic()
    any_store.wait_for_work(0.3, stop)
    assert 0.29 <= time.monotonic() - started < 2.0
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    any_store.wait_for_work(10.0, stop)
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    any_store.wait_for_work(10.0, stop)  # already stopped
    assert time.monotonic() - started < 0.2


def test_sqlite_wait_for_work_just_waits(tmp_path: Path) -> None:
    from runtime.programs.store import open_store

    with open_store(f"sqlite:///{tmp_path}/s.db") as store, open_store(f"sqlite:///{tmp_path}/s.db") as other:
        threading.Timer(0.05, lambda: other.create("m:main", [], now=1.0)).start()
        started = time.monotonic()
        store.wait_for_work(0.4, threading.Event())
        assert time.monotonic() - started >= 0.39  # no notifications: the whole timeout


NOTIFYING = {
    "create": lambda s, e: s.create("m:main", [], now=1.0),
    "send_signal": lambda s, e: s.send_signal(e.id, "go", 1, now=1.0),
    "request_cancel": lambda s, e: s.request_cancel(e.id, now=1.0),
    "release": lambda s, e: s.release("w"),
    "commit that leaves it runnable": lambda s, e: s.commit(Change(e.id, e.version, owner="w", release=True),
                                                            now=1.0),
}


@pytest.mark.parametrize("write", list(NOTIFYING))
def test_postgres_notifications_wake_a_waiting_worker(pg_url: str, write: str) -> None:
    from runtime.programs.store import open_store

    with open_store(pg_url) as store, open_store(pg_url) as elsewhere:
        elsewhere.create("m:main", [], now=0.0)
        claimed = elsewhere.claim("w", now=0.0, lease=100.0)
        assert claimed is not None
        stop = threading.Event()
        store.wait_for_work(0.0, stop)  # listening from now on
        threading.Timer(0.2, lambda: NOTIFYING[write](elsewhere, claimed)).start()
        started = time.monotonic()
        store.wait_for_work(5.0, stop)
        assert 0.15 < time.monotonic() - started < 0.4  # woken within 0.2 s of the write


def test_postgres_writes_that_make_nothing_runnable_notify_no_one(pg_url: str) -> None:
    from runtime.programs.store import open_store

    with open_store(pg_url) as store, open_store(pg_url) as elsewhere:
        e = elsewhere.create("m:main", [], now=0.0)
        claimed = elsewhere.claim("w", now=0.0, lease=100.0)
        assert claimed is not None
        stop = threading.Event()
        store.wait_for_work(0.0, stop)
        sleeping = elsewhere.commit(Change(e.id, claimed.version, owner="w", release=True,
                                           fields={"status": SLEEPING, "wake_at": 50.0}), now=1.0)
        elsewhere.renew("w", [e.id], until=200.0)
        elsewhere.next_wake(0.0)
        assert sleeping.status == SLEEPING
        started = time.monotonic()
        store.wait_for_work(0.3, stop)
        assert time.monotonic() - started >= 0.29


# ============================================================================ opening, schema versions

@on_sql_stores
def test_reopen_keeps_data(backend: Backend) -> None:
    with backend.open() as s:
        e = s.create("m:main", [1], now=1.0)
    with backend.open() as s:
        assert s.get(e.id) == e


def test_closed_store(backend: Backend) -> None:
    s = backend.open()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get("x")


@on_sql_stores
def test_read_only_and_create_false_never_create_a_store(backend: Backend) -> None:
    before = backend.fingerprint()
    for options in ({"readonly": True}, {"create": False}):
        with pytest.raises(StoreError, match="^no store at ") as info:
            backend.open(**options)
        assert "--store" in str(info.value)
        if backend.name == "postgres":
            assert backend.url in str(info.value) and repr(backend.schema) in str(info.value)
    assert backend.fingerprint() == before


@on_sql_stores
def test_read_only_reads_and_writes_nothing(backend: Backend) -> None:
    with backend.open() as s:
        e = s.create("m:main", [], now=1.0)
        s.send_signal(e.id, "go", 1, now=1.0)
    before = backend.fingerprint()
    with backend.open(readonly=True) as r:
        assert r.get(e.id) == e and [x.id for x in r.list()] == [e.id] and r.next_signal(e.id, "go") is not None
        writes = [lambda: r.create("m:main", [], now=1.0), lambda: r.claim("w", now=1.0, lease=1.0),
                  lambda: r.claim_many("w", now=1.0, lease=1.0, limit=2), lambda: r.renew("w", [e.id], until=1.0),
                  lambda: r.send_signal(e.id, "go", 1, now=1.0), lambda: r.request_cancel(e.id, now=1.0),
                  lambda: r.commit(Change(e.id, 1), now=1.0), lambda: r.commit_many([Change(e.id, 1)], now=1.0),
                  lambda: r.release("w"), lambda: r.prune(finished_before=10.0)]
        for write in writes:
            with pytest.raises(StoreError, match="opened read-only"):
                write()
        r.next_wake(0.0)
    assert backend.fingerprint() == before


def _set_version(backend: Backend, version: int) -> None:
    backend.sql("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))


@on_sql_stores
def test_schema_too_new_changes_nothing(backend: Backend) -> None:
    with backend.open() as s:
        s.create("m:main", [], now=1.0)
    latest = backend.schema_module.LATEST
    _set_version(backend, latest + 1)
    if backend.name == "sqlite":
        backend.sql("PRAGMA wal_checkpoint(TRUNCATE)")  # into the main file, so its bytes are final
    before = backend.fingerprint()
    for options in ({}, {"readonly": True}, {"create": False}):
        with pytest.raises(SchemaTooNewError) as info:
            backend.open(**options)
        assert f"has schema version {latest + 1}, newer than this durable-generators supports ({latest}): " \
               "upgrade durable-generators" in str(info.value)
    assert backend.fingerprint() == before


@on_sql_stores
def test_migrations_apply_in_order_and_roll_back_on_failure(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written by this version, opened by a newer one: the newer one's migration is applied, in
    one transaction: a migration that fails leaves the store as it was."""
    module = backend.schema_module
    with backend.open() as s:
        e = s.create("m:main", [], now=1.0)
    latest = module.LATEST
    table = "{s}.executions" if backend.name == "postgres" else "executions"
    broken = module.Migration(latest + 1, "broken", (f"ALTER TABLE {table} ADD COLUMN tag TEXT", "NOT SQL"))
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS + (broken,))
    monkeypatch.setattr(module, "LATEST", latest + 1)
    before = backend.fingerprint()
    with pytest.raises(StoreError):
        backend.open()
    assert backend.sql("SELECT value FROM meta") == [(str(latest),)]
    assert backend.fingerprint() == before
    fixed = module.Migration(latest + 1, "tags", (f"ALTER TABLE {table} ADD COLUMN tag TEXT",
                                                  f"CREATE INDEX executions_tag ON {table} (tag)"))
    monkeypatch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:latest] + (fixed,))
    with backend.open() as s:
        assert s.get(e.id).id == e.id
        assert s.claim("w", now=2.0, lease=1.0) is not None
    assert backend.sql("SELECT value FROM meta") == [(str(latest + 1),)]
    assert backend.sql("SELECT count(tag) FROM executions") == [(0,)]


BEFORE_CODE_VERSIONS = {"sqlite": 3, "postgres": 1}
BEFORE_WAITS = {"sqlite": 4, "postgres": 2}


def _store_before_code_versions(backend: Backend, monkeypatch: pytest.MonkeyPatch,
                                before: dict[str, int] = BEFORE_CODE_VERSIONS) -> None:
    """A store made by an older schema (by default the one before code versions: 3 on SQLite, 1 on PostgreSQL),
    with a sleeping run, a waiting one with a signal, and a step, written as that schema had them."""
    module = backend.schema_module
    previous = before[backend.name]
    assert module.LATEST == BEFORE_WAITS[backend.name] + 1
    with monkeypatch.context() as patch:
        patch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:previous])
        patch.setattr(module, "LATEST", previous)
        backend.open().close()
    insert = ("INSERT INTO executions (id, function, args, status, version, created_at, updated_at, wake_at,"
              " waiting_for) VALUES (?, 'm:main', '[1]', ?, 2, 1.0, 2.0, ?, ?)")
    backend.sql(insert, ("asleep", SLEEPING, 5.0, None))
    backend.sql(insert, ("waits", WAITING, None, "go"))
    backend.sql("""INSERT INTO steps (execution_id, "index", function, call, policy, status)"""
                " VALUES ('asleep', 0, 'm:work', ?, '{}', 'done')", (b"\x90",))
    backend.sql("INSERT INTO signals (execution_id, name, payload, created_at) VALUES ('waits', 'go', '1', 3.0)")
    assert backend.sql("SELECT value FROM meta") == [(str(previous),)]


@on_sql_stores
def test_a_read_only_open_of_a_store_before_code_versions_reads_nulls(backend: Backend,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _store_before_code_versions(backend, monkeypatch)
    if backend.name == "sqlite":
        backend.sql("PRAGMA wal_checkpoint(TRUNCATE)")  # into the main file, so its bytes are final
    before = backend.fingerprint()
    with backend.open(readonly=True) as r:
        listed = r.list()
        assert [(e.id, e.status, e.args, e.damage) for e in listed] == [("asleep", SLEEPING, [1], None),
                                                                        ("waits", WAITING, [1], None)]
        assert all((e.code_version, e.point, e.frames, e.blocked_on, e.migrations) == (None,) * 5 for e in listed)
        assert r.get("asleep") == listed[0] and r.steps("asleep")[0].status == "done"
        assert r.code_version("m:main", "ab12") is None and r.code_versions("m:main") == []
    assert backend.fingerprint() == before


@on_sql_stores
def test_migration_to_code_versions_keeps_the_runs(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    _store_before_code_versions(backend, monkeypatch)
    with backend.open() as s:
        assert backend.sql("SELECT value FROM meta") == [(str(backend.schema_module.LATEST),)]
        asleep, waits = s.get("asleep"), s.get("waits")
        assert (asleep.status, asleep.wake_at, asleep.version, asleep.damage) == (SLEEPING, 5.0, 2, None)
        assert (waits.waiting_for, [g.payload for g in s.signals("waits")]) == ("go", [1])
        assert (asleep.code_version, asleep.frames, asleep.blocked_on, waits.migrations) == (None,) * 4
        assert [st.status for st in s.steps("asleep")] == ["done"]
        written = s.commit(Change("waits", 2, fields=CODE, versions=[code_version()]), now=4.0)
        assert written.blocked_on == ["m@1", "m@2"] and s.code_version("m:main", "ab12") == code_version()
        assert [e.id for e in s.claim_many("w", now=10.0, lease=1.0, limit=5, skip_keys=["m@1"])] == ["asleep"]


@on_sql_stores
def test_migration_to_waits_keeps_the_runs(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    _store_before_code_versions(backend, monkeypatch, BEFORE_WAITS)
    if backend.name == "sqlite":
        assert "waits" not in {row[1] for row in backend.sql("PRAGMA table_info(executions)")}
        backend.sql("PRAGMA wal_checkpoint(TRUNCATE)")
    before = backend.fingerprint()
    with backend.open(readonly=True) as r:  # read as it is: waits read as NULL
        assert [(e.id, e.waits, e.damage) for e in r.list()] == [("asleep", None, None), ("waits", None, None)]
    assert backend.fingerprint() == before
    with backend.open() as s:
        assert backend.sql("SELECT value FROM meta") == [(str(backend.schema_module.LATEST),)]
        waits = s.get("waits")
        assert (waits.status, waits.waiting_for, waits.waits, waits.version, waits.damage) == (WAITING, "go", None, 2,
                                                                                               None)
        assert s.get("asleep").wake_at == 5.0 and [st.status for st in s.steps("asleep")] == ["done"]
        s.commit(Change("waits", 2, fields={"waiting_for": None, "waits": ["go", "stop"]}), now=4.0)
        assert [e.id for e in s.claim_many("w", now=4.5, lease=1.0, limit=5)] == ["waits"]  # its signal "go"


@on_sql_stores
def test_a_damaged_json_cell_costs_only_its_row(any_store: Store, backend: Backend) -> None:
    bad = any_store.create("m:main", [1], now=1.0).id
    good = any_store.create("m:main", [2], now=2.0).id
    backend.sql("UPDATE executions SET args = 'not json', status = 'bogus' WHERE id = ?", (bad,))
    damaged = any_store.get(bad)
    assert damaged.damage is not None and "column 'args' is not valid JSON" in damaged.damage
    assert "column 'status' is 'bogus'" in damaged.damage and damaged.args is None and damaged.status is None
    assert [e.id for e in any_store.list()] == [bad, good] and any_store.get(good).damage is None


# ============================================================================ crash points

CRASH = """
import sys
from runtime.programs.store import open_store, Change, StepRecord, FINISHED
url, action, execution_id = sys.argv[1:4]
store = open_store(url)
if action == "commit":
    e = store.claim("crasher", now=10.0, lease=100.0, execution_id=execution_id)
    step = StepRecord(execution_id, 0, "m:work", b"", {}, "pending")
    signal = store.next_signal(execution_id, "go")
    store.commit(Change(execution_id, e.version, owner="crasher", fields={"status": FINISHED}, new_step=step,
                        consume_signal=signal.id, release=True), now=11.0)
elif action == "commit_many":
    e = store.claim("crasher", now=10.0, lease=100.0, execution_id=execution_id)
    step = StepRecord(execution_id, 0, "m:work", b"", {}, "pending")
    signal = store.next_signal(execution_id, "go")
    store.commit_many([Change(execution_id, e.version, owner="crasher", fields={"status": FINISHED}, new_step=step,
                              consume_signal=signal.id, release=True)], now=11.0)
elif action == "claim":
    store.claim_many("crasher", now=10.0, lease=100.0, limit=5)
elif action == "signal":
    store.send_signal(execution_id, "late", 1, now=10.0)
elif action == "create":
    store.create("m:main", [], now=10.0, execution_id="crash-new")
print("survived")
"""

# (DURABLE_FAULTS, action, what survives: "nothing", "claim" (the lease only), "all")
SQLITE_CRASHES = [
    ("claim.selected:1", "claim", "nothing"),  # PostgreSQL selects and leases in one statement
    ("*:3", "commit", "claim"),  # claim.selected, claim.updated, then commit.updated
]
CRASHES = [
    ("claim.updated:1", "claim", "nothing"),
    ("commit.updated:1", "commit", "claim"),
    ("commit.step_written:1", "commit", "claim"),
    ("commit.signal_consumed:1", "commit", "claim"),
    ("commit.before_commit:1", "commit", "claim"),
    ("commit.after_commit:1", "commit", "all"),
    ("commit.step_written:1", "commit_many", "claim"),
    ("commit.before_commit:1", "commit_many", "claim"),
    ("commit.after_commit:1", "commit_many", "all"),
    ("signal.inserted:1", "signal", "nothing"),
    ("create.inserted:1", "create", "nothing"),
]


@pytest.mark.parametrize("backend, spec, action, survives", [
    *[(name, *crash) for crash in CRASHES for name in SQL_BACKENDS],
    *[("sqlite", *crash) for crash in SQLITE_CRASHES]],
    indirect=["backend"])
def test_crash_points(backend: Backend, spec: str, action: str, survives: str) -> None:
    with backend.open() as s:
        e = s.create("m:main", [], now=0.0)
        s.send_signal(e.id, "go", None, now=1.0)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DURABLE_FAULTS": spec}
    result = subprocess.run([sys.executable, "-c", CRASH, backend.url, action, e.id], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == faults.EXIT_CODE, result.stderr
    assert "survived" not in result.stdout and "durable faults: exiting with 86" in result.stderr
    with backend.open() as s:
        after = s.get(e.id)
        claimed = after.lease_owner == "crasher" or after.status == FINISHED
        committed = after.status == FINISHED
        assert claimed is (survives in ("claim", "all"))
        assert committed is (survives == "all")
        assert (len(s.steps(e.id)) == 1) is committed
        assert [sig.consumed for sig in s.signals(e.id)] == [committed]
        assert after.version == 1 + claimed + committed
        assert [x.id for x in s.list()] == [e.id]
    if backend.name == "sqlite":
        assert backend.sql("PRAGMA integrity_check") == [("ok",)]


@on_sql_stores
def test_no_crash_without_faults(backend: Backend) -> None:
    with backend.open() as s:
        e = s.create("m:main", [], now=0.0)
        s.send_signal(e.id, "go", None, now=1.0)
    env = {k: v for k, v in os.environ.items() if k != "DURABLE_FAULTS"}
    result = subprocess.run([sys.executable, "-c", CRASH, backend.url, "commit", e.id],
                            env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr
    with backend.open() as s:
        assert s.get(e.id).status == FINISHED


# ============================================================================ query plans

LIVE_MIX = 30  # live runs among the ended ones: 10 pending; 10 sleeping until 51, 54, ...; 10 waiting until 62, 65, ...
DUE = 2 + 10   # due at 55: the pending ones and two sleepers
NEXT_WAKE = 57.0


def _many_ended_runs(backend: Backend, ended: int) -> None:
    """``ended`` finished runs (one INSERT ... SELECT), then a few live runs of each kind, then ANALYZE."""
    if backend.name == "postgres":
        backend.sql("INSERT INTO executions (id, function, args, status, version, created_at, updated_at)"
                    " SELECT 'done' || n, 'm:main', '[]', 'finished', 2, n, n FROM generate_series(1, ?) AS n",
                    (ended,))
    else:
        backend.sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
                    " INSERT INTO executions (id, function, args, status, version, created_at, updated_at)"
                    " SELECT 'done' || i, 'm:main', '[]', 'finished', 2, i, i FROM n", (ended,))
    for i in range(LIVE_MIX):
        status, wake_at = [("pending", None), ("sleeping", 50.0 + i), ("waiting", 60.0 + i)][i % 3]
        backend.sql("INSERT INTO executions (id, function, args, status, version, created_at, updated_at, wake_at,"
                    " waiting_for) VALUES (?, 'm:main', '[]', ?, 1, ?, ?, ?, 'go')",
                    (f"live{i}", status, float(i), float(i), wake_at))
    backend.sql("UPDATE executions SET blocked_on = '[\"k@1\"]' WHERE id = 'live0'")  # pending, blocked for k@1
    backend.sql("ANALYZE")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_postgres_hot_queries_are_served_by_indexes(any_store: Store, backend: Backend) -> None:
    _many_ended_runs(backend, 20_000)
    plans = any_store.query_plans(now=55.0)  # type: ignore[attr-defined]
    assert set(plans) == {"claim", "claim_skipping", "next_wake", "prune"}
    for name, plan in plans.items():
        assert "Seq Scan on executions" not in plan, f"{name}:\n{plan}"
    for claim in ("claim", "claim_skipping"):
        assert "executions_pending" in plans[claim] and "executions_timers" in plans[claim]
    assert "executions_timers" in plans["next_wake"] and "executions_ended" in plans["prune"]
    started = time.monotonic()
    claimed = any_store.claim_many("w", now=55.0, lease=10.0, limit=100, skip_keys=["k@1"])
    assert len(claimed) == DUE - 1 and time.monotonic() - started < 0.5
    assert [e.id for e in any_store.claim_many("w", now=55.0, lease=10.0, limit=100)] == ["live0"]
    assert any_store.next_wake(55.0) == NEXT_WAKE


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_hot_queries_are_served_by_indexes(any_store: Store, backend: Backend) -> None:
    _many_ended_runs(backend, 20_000)
    statements: list[str] = []
    conn = any_store._conn()  # type: ignore[attr-defined]
    conn.set_trace_callback(statements.append)
    try:
        claimed = any_store.claim_many("w", now=55.0, lease=10.0, limit=100, skip_keys=["k@1"])
        claimed += any_store.claim_many("w", now=55.0, lease=10.0, limit=100)
        wake = any_store.next_wake(55.0)
    finally:
        conn.set_trace_callback(None)
    assert len(claimed) == DUE and claimed[-1].id == "live0" and wake == NEXT_WAKE
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert reads
    for statement in reads:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
        assert "SCAN executions" not in plan, (statement, plan)  # a full scan; "SCAN ... USING INDEX" is fine
