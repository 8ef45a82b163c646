"""The SQLite store: every Store method, compare-and-swap, leases, claiming across processes, schema
versions, store URLs and crash points."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from runtime.programs.store import (CANCELLED, FAILED, FINISHED, PENDING, SLEEPING, WAITING, Change, ConflictError,
                           Execution, InvalidStateError, NotFoundError, SchemaTooNewError, SQLiteStore, StepRecord,
                           StoreError, open_store)
from runtime.programs.store import faults, schema, sqlite_path

ROOT = Path(__file__).resolve().parent.parent


def step_record(execution_id: str, index: int, **values: Any) -> StepRecord:
    defaults: dict[str, Any] = dict(function="m:work", call=b"\x92\x90\x80", policy={"attempts": 3},
                                    status="pending")
    defaults.update(values)
    return StepRecord(execution_id=execution_id, index=index, **defaults)


def put(store: SQLiteStore, execution_id: str, *, now: float, **fields: Any) -> Execution:
    """Set fields without a lease (as a test setup would), whatever the version."""
    version = store.get(execution_id).version
    return store.commit(Change(execution_id, version, fields=fields), now=now)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@contextmanager
def opened(url: str | None = None) -> Iterator[SQLiteStore]:
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    try:
        yield store
    finally:
        store.close()


def run_python(code: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("DURABLE_STORE", None)
    return subprocess.run([sys.executable, "-c", code, *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout)


# -- create, get, list

def test_create_and_get(store: SQLiteStore) -> None:
    created = store.create("m:main", (1, "two", [3]), now=100.0)
    assert len(created.id) == 12 and int(created.id, 16) >= 0
    assert (created.function, created.args, created.status, created.version) == ("m:main", [1, "two", [3]], PENDING, 1)
    assert (created.created_at, created.updated_at) == (100.0, 100.0)
    assert created.snapshot is None and created.cancel_requested is False and created.lease_owner is None
    assert store.get(created.id) == created


def test_create_with_id_and_duplicates(store: SQLiteStore) -> None:
    store.create("m:main", [], now=1.0, execution_id="order-7")
    assert store.get("order-7").function == "m:main"
    with pytest.raises(ConflictError, match="already exists"):
        store.create("m:other", [], now=2.0, execution_id="order-7")
    assert store.get("order-7").function == "m:main"
    ids = {store.create("m:main", [], now=3.0).id for _ in range(50)}
    assert len(ids) == 50


def test_create_rejects_bad_args(store: SQLiteStore) -> None:
    with pytest.raises(TypeError):
        store.create("m:main", "abc", now=1.0)
    with pytest.raises(TypeError, match="JSON-compatible"):
        store.create("m:main", [object()], now=1.0)
    assert store.list() == []


def test_get_unknown(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        store.get("nope")


def test_list_order_filter_limit_and_no_blobs(store: SQLiteStore) -> None:
    later = store.create("m:b", [], now=20.0)
    first = store.create("m:a", [], now=10.0)
    put(store, later.id, now=21.0, status=FINISHED, snapshot=b"snap", result=b"res", error_value=b"ev",
        progress={"done": 1})
    listed = store.list()
    assert [e.id for e in listed] == [first.id, later.id]
    assert listed[1].status == FINISHED and listed[1].progress == {"done": 1}
    assert (listed[1].snapshot, listed[1].result, listed[1].error_value) == (None, None, None)
    assert store.get(later.id).snapshot == b"snap"
    assert [e.id for e in store.list(status=FINISHED)] == [later.id]
    assert [e.id for e in store.list(limit=1)] == [first.id]
    assert store.list(status=WAITING) == []
    with pytest.raises(ValueError):
        store.list(status="bogus")


# -- commit

def test_commit_writes_fields_and_bumps_version(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=1.0)
    fields = dict(status=WAITING, snapshot=b"\x00\x01", request={"kind": "wait", "name": "go"}, wake_at=50.0,
                  waiting_for="go", steps_started=2, progress=[1, "x"], error="e", cancel_requested=True)
    written = store.commit(Change(e.id, 1, fields=fields), now=5.0)
    assert written.version == 2 and written.updated_at == 5.0 and written.created_at == 1.0
    for name, value in fields.items():
        assert getattr(written, name) == value
    assert store.get(e.id) == written
    assert rows(store.path, "SELECT cancel_requested, typeof(snapshot), request FROM executions") == [
        (1, "blob", '{"kind": "wait", "name": "go"}')]


def test_commit_refuses_fields_it_does_not_own(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=1.0)
    for bad in ({"version": 9}, {"id": "x"}, {"lease_owner": "w"}, {"created_at": 0.0}, {"nope": 1},
                {"status": "bogus"}):
        with pytest.raises(ValueError):
            store.commit(Change(e.id, 1, fields=bad), now=2.0)
    with pytest.raises(TypeError, match="JSON-compatible"):
        store.commit(Change(e.id, 1, fields={"progress": {1, 2}}), now=2.0)
    assert store.get(e.id).version == 1


def test_commit_unknown_execution(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError):
        store.commit(Change("nope", 1, fields={"status": FINISHED}), now=1.0)


def test_cas_conflict_between_two_stores_writes_nothing(db: Path) -> None:
    with SQLiteStore(db) as one, SQLiteStore(db) as two:
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
    assert rows(db, "SELECT count(*) FROM steps") == [(1,)]
    assert rows(db, "SELECT id FROM signals WHERE consumed = 0") == [(s2.id,)]


def test_commit_with_owner_needs_the_live_lease(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    claimed = store.claim("w1", now=0.0, lease=10.0)
    assert claimed is not None
    v = claimed.version
    with pytest.raises(ConflictError, match="leased to 'w1', not 'w2'"):
        store.commit(Change(e.id, v, owner="w2", fields={"status": FINISHED}), now=5.0)
    with pytest.raises(ConflictError, match="lapsed"):
        store.commit(Change(e.id, v, owner="w1", fields={"status": FINISHED}), now=10.0)
    assert store.get(e.id).status == PENDING and store.get(e.id).version == v
    done = store.commit(Change(e.id, v, owner="w1", fields={"status": FINISHED}, release=True), now=9.5)
    assert (done.status, done.lease_owner, done.lease_until, done.version) == (FINISHED, None, None, v + 1)
    with pytest.raises(ConflictError, match="leased to nobody"):
        store.commit(Change(e.id, v + 1, owner="w1", fields={}), now=9.6)


def test_commit_consuming_a_consumed_signal_rolls_back(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    sig = store.send_signal(e.id, "go", None, now=1.0)
    store.commit(Change(e.id, 1, consume_signal=sig.id), now=2.0)
    with pytest.raises(ConflictError, match="already consumed"):
        store.commit(Change(e.id, 2, fields={"status": FINISHED}, new_step=step_record(e.id, 0),
                            consume_signal=sig.id), now=3.0)
    after = store.get(e.id)
    assert (after.version, after.status) == (2, PENDING)
    assert store.steps(e.id) == []
    other = store.create("m:main", [], now=0.0)
    with pytest.raises(ConflictError):  # a signal of another execution
        store.commit(Change(other.id, 1, consume_signal=store.send_signal(e.id, "go", 1, now=4.0).id), now=5.0)
    assert store.get(other.id).version == 1


# -- steps

def test_steps_insert_update_and_read(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    v = store.commit(Change(e.id, 1, fields={"steps_started": 1},
                            new_step=step_record(e.id, 0, started_at=1.0)), now=1.0).version
    v = store.commit(Change(e.id, v, new_step=step_record(e.id, 1, function="m:other")), now=2.0).version
    store.commit(Change(e.id, v, step_update=(0, {"status": "done", "attempts": 1, "result": b"r",
                                                 "finished_at": 3.0, "policy": {"attempts": 5}})), now=3.0)
    steps = store.steps(e.id)
    assert [(s.index, s.function, s.status) for s in steps] == [(0, "m:work", "done"), (1, "m:other", "pending")]
    assert steps[0] == StepRecord(execution_id=e.id, index=0, function="m:work", call=b"\x92\x90\x80",
                                  policy={"attempts": 5}, status="done", attempts=1, result=b"r",
                                  started_at=1.0, finished_at=3.0)
    assert store.step(e.id, 1) == steps[1]
    assert store.step(e.id, 2) is None and store.steps("nope") == []


def test_step_errors_write_nothing(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    store.commit(Change(e.id, 1, new_step=step_record(e.id, 0)), now=1.0)
    with pytest.raises(StoreError, match="step 0"):
        store.commit(Change(e.id, 2, fields={"steps_started": 9}, new_step=step_record(e.id, 0)), now=2.0)
    with pytest.raises(StoreError, match="no step 5"):
        store.commit(Change(e.id, 2, fields={"steps_started": 9}, step_update=(5, {"attempts": 1})), now=2.0)
    with pytest.raises(ValueError):
        store.commit(Change(e.id, 2, step_update=(0, {"index": 3})), now=2.0)
    with pytest.raises(ValueError):
        store.commit(Change(e.id, 2, new_step=step_record("other", 1)), now=2.0)
    with pytest.raises(ValueError):
        store.commit(Change(e.id, 2, new_step=step_record(e.id, 1), step_update=(0, {})), now=2.0)
    assert store.get(e.id).version == 2 and store.get(e.id).steps_started == 0
    assert len(store.steps(e.id)) == 1


# -- claim and leases

def _sleeping(store: SQLiteStore, wake_at: float | None, **extra: Any) -> str:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=SLEEPING, wake_at=wake_at, **extra)
    return e.id


def _waiting(store: SQLiteStore, wake_at: float | None = None, signal: str | None = None,
             consumed: bool = False) -> str:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=WAITING, waiting_for="go", wake_at=wake_at)
    if signal is not None:
        sent = store.send_signal(e.id, signal, None, now=2.0)
        if consumed:
            store.commit(Change(e.id, store.get(e.id).version, consume_signal=sent.id), now=2.0)
    return e.id


def _terminal(store: SQLiteStore, status: str) -> str:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=SLEEPING, wake_at=0.0)
    store.request_cancel(e.id, now=1.0)
    put(store, e.id, now=1.0, status=status)
    return e.id


RUNNABLE_CASES = {
    "pending": (lambda s: s.create("m:main", [], now=0.0).id, True),
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
    "finished, cancel requested": (lambda s: _terminal(s, FINISHED), False),
    "failed, cancel requested": (lambda s: _terminal(s, FAILED), False),
    "cancelled, cancel requested": (lambda s: _terminal(s, CANCELLED), False),
}


@pytest.mark.parametrize("case", list(RUNNABLE_CASES))
def test_claim_runnable_rules(store: SQLiteStore, case: str) -> None:
    make, runnable = RUNNABLE_CASES[case]
    execution_id = make(store)
    before = store.get(execution_id)
    claimed = store.claim("w", now=50.0, lease=5.0, execution_id=execution_id)
    assert (claimed is not None) is runnable
    assert (store.claim("w", now=50.0, lease=5.0) is not None) is False  # nothing else to claim
    if claimed is not None:
        assert claimed.id == execution_id and claimed.version == before.version + 1
        assert (claimed.lease_owner, claimed.lease_until) == ("w", 55.0)
    else:
        assert store.get(execution_id) == before


def test_claim_most_overdue_first(store: SQLiteStore) -> None:
    pending = store.create("m:main", [], now=10.0).id
    early_sleeper = _sleeping(store, 5.0)
    signalled = _waiting(store, signal="go")  # runnable since its last transition at 1.0
    late_sleeper = _sleeping(store, 12.0)
    future_sleeper = _sleeping(store, 30.0)
    order = []
    while (claimed := store.claim("w", now=15.0, lease=100.0)) is not None:
        order.append(claimed.id)
    assert order == [signalled, early_sleeper, pending, late_sleeper]
    assert future_sleeper not in order


def test_claim_returns_the_full_execution(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, snapshot=b"frames", result=b"r")
    claimed = store.claim("w", now=2.0, lease=1.0)
    assert claimed is not None and claimed.snapshot == b"frames" and claimed == store.get(e.id)


def test_lease_excludes_other_owners_until_it_lapses(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    first = store.claim("w1", now=0.0, lease=10.0)
    assert first is not None and first.lease_until == 10.0
    assert store.claim("w2", now=5.0, lease=10.0) is None
    assert store.claim("w2", now=9.99, lease=10.0, execution_id=e.id) is None
    assert store.claim("w1", now=5.0, lease=10.0) is None  # even its owner cannot claim it twice
    second = store.claim("w2", now=10.0, lease=10.0)
    assert second is not None and second.lease_owner == "w2" and second.version == first.version + 1
    with pytest.raises(ConflictError):
        store.commit(Change(e.id, first.version, owner="w1", fields={"status": FINISHED}), now=11.0)


def test_renew(store: SQLiteStore) -> None:
    a = store.create("m:main", [], now=0.0).id
    b = store.create("m:main", [], now=0.0).id
    assert store.claim("w1", now=0.0, lease=10.0, execution_id=a) is not None
    assert store.claim("w2", now=0.0, lease=10.0, execution_id=b) is not None
    version = store.get(a).version
    assert store.renew("w1", [a, b, "nope"], until=30.0) == [b, "nope"]
    assert store.get(a).lease_until == 30.0 and store.get(b).lease_until == 10.0
    assert store.get(a).version == version  # renewing is not a transition
    assert store.claim("w2", now=20.0, lease=10.0, execution_id=a) is None
    assert store.renew("w1", [], until=40.0) == []
    store.commit(Change(a, version, owner="w1", release=True), now=21.0)
    assert store.renew("w1", [a], until=40.0) == [a]


def test_release_makes_it_claimable(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    claimed = store.claim("w1", now=0.0, lease=100.0)
    assert claimed is not None
    store.commit(Change(e.id, claimed.version, owner="w1", release=True), now=1.0)
    again = store.claim("w2", now=1.0, lease=100.0)
    assert again is not None and again.lease_owner == "w2"


def test_claim_argument_errors(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError):
        store.claim("w", now=0.0, lease=1.0, execution_id="nope")
    with pytest.raises(ValueError):
        store.claim("w", now=0.0, lease=0.0)
    with pytest.raises(ValueError):
        store.claim("", now=0.0, lease=1.0)


def test_threads_share_a_store(store: SQLiteStore) -> None:
    ids = {store.create("m:main", [], now=float(i)).id for i in range(40)}
    claimed: list[str] = []
    connections: set[int] = set()
    errors: list[BaseException] = []
    all_connected = threading.Barrier(4)

    def work(name: str) -> None:
        try:
            connections.add(id(store._conn()))
            all_connected.wait()
            while (e := store.claim(name, now=100.0, lease=50.0)) is not None:
                store.commit(Change(e.id, e.version, owner=name, fields={"status": FINISHED}, release=True),
                             now=100.0)
                claimed.append(e.id)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(claimed) == sorted(ids) and len(connections) == 4
    assert {e.status for e in store.list()} == {FINISHED}


CLAIM_LOOP = """
import sys, time
from pathlib import Path
from runtime.programs.store import SQLiteStore, Change, FINISHED
path, name, go = sys.argv[1:4]
store = SQLiteStore(path)
Path(go + "." + name).touch()
while not Path(go).exists():
    time.sleep(0.005)
while (e := store.claim(name, now=100.0, lease=1000.0)) is not None:
    store.commit(Change(e.id, e.version, owner=name, fields={"status": FINISHED, "error": name}, release=True),
                 now=101.0)
    print(e.id, flush=True)
"""


def test_processes_claim_each_execution_once(store: SQLiteStore, tmp_path: Path) -> None:
    ids = {store.create("m:main", [], now=float(i)).id for i in range(40)}
    results = start_together(CLAIM_LOOP, [[str(store.path), f"p{i}"] for i in range(4)], tmp_path / "go")
    assert [rc for _, _, rc in results] == [0] * 4, [err for _, err, _ in results]
    claimed = [line for out, _, _ in results for line in out.split()]
    assert sorted(claimed) == sorted(ids)
    finished = store.list(status=FINISHED)
    assert len(finished) == 40
    by_worker = {f"p{i}": out.split() for i, (out, _, _) in enumerate(results)}
    assert all(e.id in by_worker[e.error or ""] for e in finished)


OPEN_AND_CREATE = """
import sys, time
from pathlib import Path
from runtime.programs.store import SQLiteStore
path, name, go = sys.argv[1:4]
Path(go + "." + name).touch()
while not Path(go).exists():
    time.sleep(0.002)
SQLiteStore(path).create("m:main", [name], now=1.0, execution_id=name)
"""


def start_together(code: str, args: list[list[str]], go: Path) -> list[tuple[str, str, int]]:
    """Run one process per argument list, release them at once; (stdout, stderr, returncode) each."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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


def test_processes_create_a_new_store_together(db: Path, tmp_path: Path) -> None:
    results = start_together(OPEN_AND_CREATE, [[str(db), f"p{i}"] for i in range(4)], tmp_path / "go")
    assert [rc for _, _, rc in results] == [0] * 4, [err for _, err, _ in results]
    with SQLiteStore(db) as s:
        assert sorted(e.id for e in s.list()) == ["p0", "p1", "p2", "p3"]
    assert rows(db, "SELECT value FROM meta") == [(str(schema.LATEST),)]


@pytest.mark.skipif(not hasattr(os, "fork"),
                    reason="os.fork does not exist on this platform (Windows): no child can inherit a connection, "
                           "so the store's re-open-after-fork path cannot run")
def test_forked_child_opens_its_own_connection(store: SQLiteStore) -> None:
    parent = store.create("m:main", [], now=1.0)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        try:
            ok = store.get(parent.id) == parent and store.create("m:child", [], now=2.0).function == "m:child"
            store.close()  # closes the child's connection, not the one inherited from the parent
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [e.function for e in store.list()] == ["m:main", "m:child"]
    assert store.get(parent.id) == parent  # the parent's connection still works


# -- signals and cancellation

def test_signals_fifo_and_consumption(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    a1 = store.send_signal(e.id, "a", {"n": 1}, now=1.0)
    b1 = store.send_signal(e.id, "b", [1, 2], now=2.0)
    a2 = store.send_signal(e.id, "a", "two", now=3.0)
    assert (a1.name, a1.payload, a1.created_at, a1.consumed) == ("a", {"n": 1}, 1.0, False)
    assert a1.id < b1.id < a2.id
    assert store.next_signal(e.id, "a") == a1
    store.commit(Change(e.id, 1, consume_signal=a1.id), now=4.0)
    assert store.next_signal(e.id, "a") == a2
    assert store.next_signal(e.id, "b") == b1
    assert store.next_signal(e.id, "c") is None
    assert [(s.id, s.consumed) for s in store.signals(e.id)] == [(a1.id, True), (b1.id, False), (a2.id, False)]
    assert store.signals("nope") == [] and store.next_signal("nope", "a") is None
    assert store.get(e.id).version == 2  # sending signals does not touch the execution
    assert store.next_signal(e.id, "a", exclude=a2.id) is None  # delivered, not yet consumed
    a3 = store.send_signal(e.id, "a", 3, now=5.0)
    assert store.next_signal(e.id, "a", exclude=a2.id) == a3


def test_a_commit_by_the_lease_holder_extends_its_lease(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    claimed = store.claim("w", now=1.0, lease=10.0)
    assert claimed is not None and claimed.lease_until == 11.0
    after = store.commit(Change(e.id, claimed.version, owner="w", lease_until=15.0), now=5.0)
    assert (after.lease_owner, after.lease_until) == ("w", 15.0)
    assert store.claim("other", now=12.0, lease=10.0) is None  # still ours at 12
    released = store.commit(Change(e.id, after.version, owner="w", release=True, lease_until=99.0), now=13.0)
    assert (released.lease_owner, released.lease_until) == (None, None)  # release wins


def test_send_signal_errors_write_nothing(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError):
        store.send_signal("nope", "go", None, now=1.0)
    done = store.create("m:main", [], now=0.0)
    put(store, done.id, now=1.0, status=FINISHED)
    with pytest.raises(InvalidStateError, match="finished"):
        store.send_signal(done.id, "go", None, now=2.0)
    with pytest.raises(TypeError):
        store.send_signal(done.id, "go", object(), now=2.0)
    with pytest.raises(ValueError):
        store.send_signal(done.id, "", None, now=2.0)
    assert rows(store.path, "SELECT count(*) FROM signals") == [(0,)]


def test_request_cancel(store: SQLiteStore) -> None:
    e = store.create("m:main", [], now=0.0)
    put(store, e.id, now=1.0, status=SLEEPING, wake_at=1000.0)
    claimed = store.claim("w", now=2.0, lease=10.0)
    assert claimed is None
    marked = store.request_cancel(e.id, now=3.0)
    assert marked.cancel_requested is True and marked.version == 2 and marked.updated_at == 1.0
    claimed = store.claim("w", now=4.0, lease=10.0)
    assert claimed is not None and claimed.cancel_requested
    assert store.request_cancel(e.id, now=5.0).cancel_requested  # idempotent, and does not need the lease
    ended = store.commit(Change(e.id, claimed.version, owner="w", fields={"status": CANCELLED}, release=True),
                         now=6.0)
    assert ended.status == CANCELLED
    with pytest.raises(InvalidStateError, match="cancelled"):
        store.request_cancel(e.id, now=7.0)
    with pytest.raises(NotFoundError):
        store.request_cancel("nope", now=7.0)
    other = store.create("m:main", [], now=0.0)
    put(store, other.id, now=1.0, status=FAILED)
    with pytest.raises(InvalidStateError):
        store.request_cancel(other.id, now=2.0)
    assert store.get(other.id).cancel_requested is False


# -- the file: schema, migrations, bad files

def test_new_store_schema(store: SQLiteStore) -> None:
    assert rows(store.path, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(schema.LATEST),)]
    assert rows(store.path, "PRAGMA journal_mode") == [("wal",)]
    names = {name for (name,) in rows(store.path, "SELECT name FROM sqlite_master")}
    assert {"executions", "steps", "signals", "meta", "executions_claim", "signals_pending"} <= names
    assert store._conn().execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_reopen_keeps_data(db: Path) -> None:
    with SQLiteStore(db) as s:
        e = s.create("m:main", [1], now=1.0)
    with SQLiteStore(db) as s:
        assert s.get(e.id) == e


def test_closed_store(db: Path) -> None:
    s = SQLiteStore(db)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get("x")


def test_schema_too_new_changes_nothing(db: Path, tmp_path: Path) -> None:
    with SQLiteStore(db) as s:
        s.create("m:main", [], now=1.0)
    copy = tmp_path / "newer.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema.LATEST + 1),))
    conn.commit()
    conn.close()
    before = copy.read_bytes()
    for options in ({}, {"readonly": True}):
        with pytest.raises(SchemaTooNewError) as info:
            SQLiteStore(copy, **options)
        assert str(info.value) == (f"store {copy} has schema version {schema.LATEST + 1}, newer than this durable-generators supports "
                                   f"({schema.LATEST}): upgrade durable-generators")
    assert copy.read_bytes() == before


def test_migrations_apply_in_order_and_roll_back_on_failure(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SQLiteStore(db) as s:
        e = s.create("m:main", [], now=1.0)
    latest = schema.LATEST
    broken = schema.Migration(latest + 1, "broken", ("ALTER TABLE executions ADD COLUMN tag TEXT", "NOT SQL"))
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + (broken,))
    monkeypatch.setattr(schema, "LATEST", latest + 1)
    with pytest.raises(StoreError):
        SQLiteStore(db)
    assert rows(db, "SELECT value FROM meta") == [(str(latest),)]
    assert "tag" not in {r[1] for r in rows(db, "PRAGMA table_info(executions)")}
    fixed = schema.Migration(latest + 1, "tags", ("ALTER TABLE executions ADD COLUMN tag TEXT",
                                                  "CREATE INDEX executions_tag ON executions (tag)"))
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:latest] + (fixed,))
    with SQLiteStore(db) as s:
        assert s.get(e.id).id == e.id
    assert rows(db, "SELECT value FROM meta") == [(str(latest + 1),)]
    assert "tag" in {r[1] for r in rows(db, "PRAGMA table_info(executions)")}


def version_1_store(path: Path) -> None:
    """A store as version 1 of the schema wrote it (its DDL as it was), with an execution and a step."""
    conn = sqlite3.connect(path)
    with conn:
        for statement in schema.MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO executions (id, function, args, status, version, created_at, updated_at)"
                     " VALUES ('old', 'm:main', '[1]', 'pending', 1, 1.0, 1.0)")
        conn.execute("""INSERT INTO steps (execution_id, "index", function, call, policy, status)"""
                     " VALUES ('old', 0, 'm:work', x'90', '{}', 'pending')")
    conn.close()


def test_version_1_store_migrates_to_the_latest_schema(db: Path) -> None:
    version_1_store(db)
    assert "mac" not in {r[1] for r in rows(db, "PRAGMA table_info(executions)")}
    with SQLiteStore(db) as s:
        e = s.get("old")
        assert (e.args, e.mac, e.damage) == ([1], None, None) and s.steps("old")[0].mac is None
        e = s.commit(Change("old", 1, fields={"mac": b"sig-e", "steps_started": 2},
                            new_step=step_record("old", 1, mac=b"sig-1")), now=2.0)
        s.commit(Change("old", e.version, step_update=(0, {"mac": b"sig-0"})), now=3.0)
        assert e.mac == b"sig-e" and s.get("old").mac == b"sig-e"
        assert [st.mac for st in s.steps("old")] == [b"sig-0", b"sig-1"]
        assert e.held_until is None and s.claim("w", now=4.0, lease=5.0).id == "old"
    assert rows(db, "SELECT value FROM meta") == [(str(schema.LATEST),)] and schema.LATEST == 3
    assert rows(db, "SELECT typeof(mac) FROM executions UNION ALL SELECT typeof(mac) FROM steps") == [("blob",)] * 3


def test_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    before = junk.read_bytes()
    with pytest.raises(StoreError, match="is not a SQLite database") as info:
        SQLiteStore(junk)
    assert type(info.value) is StoreError and not isinstance(info.value, sqlite3.Error)
    assert junk.read_bytes() == before


def test_foreign_database_and_missing_directory(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a durable-generators store"):
        SQLiteStore(other)
    with pytest.raises(StoreError, match="cannot open store"):
        SQLiteStore(tmp_path / "missing" / "store.db")


# -- URLs

def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sqlite_path("sqlite:///rel/x.db") == "rel/x.db"
    assert sqlite_path("sqlite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("SQLite:////abs/x.db") == "/abs/x.db"
    assert sqlite_path("plain/x.db") == "plain/x.db"
    assert sqlite_path("/abs/x.db") == "/abs/x.db"
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with opened("sqlite:///sub/a.db") as s:
        assert s.url == f"sqlite:///{tmp_path}/sub/a.db" and (tmp_path / "sub" / "a.db").exists()
    with opened(f"sqlite:///{tmp_path}/b.db") as s:
        assert Path(s.path) == tmp_path / "b.db"
    with opened("c.db") as s:
        assert Path(s.path) == tmp_path / "c.db"
    with opened("sqlite:///new/folder/d.db") as s:  # open_store creates the folder
        assert Path(s.path) == tmp_path / "new" / "folder" / "d.db"


@pytest.mark.parametrize("url, message", [
    ("postgresql://user@host/db", "PostgreSQL stores are not available yet"),
    ("postgres://host/db", "use sqlite:///path"),
    ("mysql://host/db", "sqlite:///relative/path.db, sqlite:////absolute/path.db or a plain file path"),
    ("sqlite://host/x.db", "no host"),
    ("sqlite:///", "names no file"),
    ("sqlite:///:memory:", "in-memory"),
    ("", "empty"),
])
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_default_url_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    with opened() as s:
        assert Path(s.path) == tmp_path / ".durable" / "durable.db"
    monkeypatch.setenv("DURABLE_STORE", "sqlite:///env.db")
    with opened() as s:
        assert Path(s.path) == tmp_path / "env.db"
    monkeypatch.setenv("DURABLE_STORE", "postgresql://host/db")
    with pytest.raises(StoreError, match="PostgreSQL"):
        open_store()
    with opened(str(tmp_path / "explicit.db")) as s:
        assert Path(s.path) == tmp_path / "explicit.db"
    assert not (tmp_path / "env.db-wal").exists()


# -- crash points

def test_fault_spec_parsing() -> None:
    assert faults.parse("") == {}
    assert faults.parse("commit.updated:1, claim.selected:3") == {"commit.updated": 1, "claim.selected": 3}
    assert faults.parse("*:5") == {"*": 5}
    for bad in ("commit.updated", "commit.updated:0", ":1", "x:y"):
        with pytest.raises(ValueError, match="DURABLE_FAULTS"):
            faults.parse(bad)


CRASH = """
import sys
from runtime.programs.store import SQLiteStore, Change, StepRecord, FINISHED
path, action, execution_id = sys.argv[1:4]
store = SQLiteStore(path)
if action == "commit":
    e = store.claim("crasher", now=10.0, lease=100.0, execution_id=execution_id)
    step = StepRecord(execution_id, 0, "m:work", b"", {}, "pending")
    signal = store.next_signal(execution_id, "go")
    store.commit(Change(execution_id, e.version, owner="crasher", fields={"status": FINISHED}, new_step=step,
                        consume_signal=signal.id, release=True), now=11.0)
elif action == "claim":
    store.claim("crasher", now=10.0, lease=100.0)
elif action == "signal":
    store.send_signal(execution_id, "late", 1, now=10.0)
elif action == "create":
    store.create("m:main", [], now=10.0, execution_id="crash-new")
print("survived")
"""

# (DURABLE_FAULTS, action, what survives: "nothing", "claim" (the lease only), "all")
CRASHES = [
    ("claim.selected:1", "claim", "nothing"),
    ("claim.updated:1", "claim", "nothing"),
    ("commit.updated:1", "commit", "claim"),
    ("commit.step_written:1", "commit", "claim"),
    ("commit.signal_consumed:1", "commit", "claim"),
    ("commit.before_commit:1", "commit", "claim"),
    ("commit.after_commit:1", "commit", "all"),
    ("*:3", "commit", "claim"),  # claim.selected, claim.updated, then commit.updated
    ("signal.inserted:1", "signal", "nothing"),
    ("create.inserted:1", "create", "nothing"),
]


@pytest.mark.parametrize("spec, action, survives", CRASHES)
def test_crash_points(db: Path, spec: str, action: str, survives: str) -> None:
    with SQLiteStore(db) as s:
        e = s.create("m:main", [], now=0.0)
        s.send_signal(e.id, "go", None, now=1.0)
    result = run_python(CRASH, str(db), action, e.id, env={"DURABLE_FAULTS": spec})
    assert result.returncode == faults.EXIT_CODE, result.stderr
    assert "survived" not in result.stdout and "durable faults: exiting with 86" in result.stderr
    with SQLiteStore(db) as s:
        after = s.get(e.id)
        claimed = after.lease_owner == "crasher" or after.status == FINISHED
        committed = after.status == FINISHED
        assert claimed is (survives in ("claim", "all"))
        assert committed is (survives == "all")
        assert (len(s.steps(e.id)) == 1) is committed
        assert [sig.consumed for sig in s.signals(e.id)] == [committed]
        assert after.version == 1 + claimed + committed
        assert [x.id for x in s.list()] == [e.id]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


def test_no_crash_without_faults(db: Path) -> None:
    with SQLiteStore(db) as s:
        e = s.create("m:main", [], now=0.0)
        s.send_signal(e.id, "go", None, now=1.0)
    result = run_python(CRASH, str(db), "commit", e.id)
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr
    with SQLiteStore(db) as s:
        assert s.get(e.id).status == FINISHED
