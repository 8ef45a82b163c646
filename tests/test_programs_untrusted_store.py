"""A store row is data from outside: a worker acts only on what the allow rules and the seals let through,
and no row takes a worker down or keeps it busy forever (attack review, items 2, 4, 6, 10, 11 and 12).

Programs run on a real SQLite store with a virtual clock; each test damages or forges rows with plain
SQL, as someone with write access to the database would, then lets a worker at them.
"""
from __future__ import annotations

import importlib
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from crafting import FIRST_VALUE_SLOT, shared_tuple_dag
from harness import raw_sql
import runtime
from runtime import values
from runtime.programs.clock import VirtualClock
from runtime.programs.runner import ProgramError, Runner
from runtime.programs.store import FAILED, FINISHED, SLEEPING
from runtime.programs.store.sqlite import SQLiteStore
from runtime.programs.worker import Worker

_ids = itertools.count(1)
KEY = b"k" * 32

PROGRAMS = '''
import os
from runtime import durable, checkpoint, sleep, step, wait

MARKS = []


def mark(what):
    MARKS.append(what)
    return what


def flaky(what):
    MARKS.append(("flaky", what))
    if len([m for m in MARKS if m[0] == "flaky"]) < 2:
        raise ConnectionError("try again")
    return what


@durable
def two_steps():
    a = yield step(mark, "a")
    yield checkpoint()
    b = yield step(mark, "b")
    return [a, b]


@durable
def retried():
    return (yield step(flaky, "x").retry(attempts=3, backoff=10))


@durable
def waits():
    got = yield wait("go")
    return got


@durable
def holds(value):
    got = yield wait("go")
    return [value, got]


@durable
def sleeps():
    yield sleep(3600)
    return "woke"


@durable
def yields(value):
    yield value
    return "after"


def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@durable
def odd_progress(which):
    yield {"big": 10 ** 5000, "surrogate": "\\ud800", "deep": nested(100_000)}[which]
    return "after"


class Sticky:
    def __getstate__(self):
        raise RuntimeError("no state for you")

    def __setstate__(self, state):
        pass


@durable
def sticky():
    s = Sticky()
    yield checkpoint()
    return s


@durable
def bad_request(kind):
    if kind == "sleep-nan":
        yield sleep(float("nan"))
    elif kind == "sleep-inf":
        yield sleep(float("inf"))
    elif kind == "sleep-huge":
        yield sleep(1e300)
    elif kind == "wait-nan":
        yield wait("x", timeout=float("nan"))
    elif kind == "retry-nan":
        yield step(mark, 1).retry(backoff=float("nan"))
    return "unreachable"
'''


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = f"dg_untrusted_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(PROGRAMS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the programs module is a module of the project
    importlib.invalidate_caches()
    previous = runtime.configure(signing_key=None, accepted_keys=[])
    store = SQLiteStore(tmp_path / "store.db")
    clock = VirtualClock()

    class Env:
        pass

    e = Env()
    e.name, e.store, e.clock, e.path = name, store, clock, tmp_path / "store.db"
    e.runner = Runner(store, clock=clock, lease=30)
    e.worker = Worker(store, clock=clock, lease=30)
    e.module = lambda: importlib.import_module(name)
    yield e
    store.close()
    runtime.restore_settings(previous)
    sys.modules.pop(name, None)


def start(env, function: str, *args: Any):
    return env.runner.start(f"{env.name}:{function}", list(args))


def sql(env, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return raw_sql(env.path, statement, params)


def run_until(env, execution_id: str, status: str, limit: int = 20) -> None:
    for _ in range(limit):
        if env.store.get(execution_id).status == status:
            return
        env.runner.claim_and_advance(execution_id)
        env.clock.advance(3600)
    assert env.store.get(execution_id).status == status, env.store.get(execution_id)


def signed(env) -> None:
    runtime.configure(signing_key=KEY)


def forge_step(env, execution_id: str, **columns: Any) -> None:
    """Change the columns of the step an execution waits on and seal both rows again with a checksum
    (no key): what anyone with write access to an unsigned store can do."""
    from runtime.programs.records import execution_parts as _execution_parts, step_parts as _step_parts
    from runtime.values import seals

    ex = env.store.get(execution_id)
    step = env.store.step(execution_id, ex.request["index"])
    for name, value in columns.items():
        setattr(step, name, value)
    step_mac = seals.seal("step", _step_parts(step))
    mac = seals.seal("execution", _execution_parts(ex.id, ex.function, ex.args, ex.snapshot, ex.request,
                                                   ex.steps_started, step_mac))
    sets = ", ".join(f"{name} = ?" for name in columns)
    sql(env, f"UPDATE steps SET {sets}, mac = ? WHERE execution_id = ?", (*columns.values(), step_mac, execution_id))
    sql(env, "UPDATE executions SET mac = ? WHERE id = ?", (mac, execution_id))


# ============================================================================ item 2: names in rows


@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_a_step_row_naming_os_system_never_runs_it(env, tmp_path, key):
    """The step's function column is resolved through the same rules as everything else, and with a key
    the forged row (whose seal the attacker cannot make) is refused before that."""
    runtime.configure(signing_key=key)
    ex = start(env, "retried")
    env.runner.claim_and_advance(ex.id)  # the first attempt fails: a retry is scheduled
    assert env.store.get(ex.id).status == SLEEPING
    target = tmp_path / "pwned"
    call = values.dump_value(([f"touch {target}"], {}))
    runtime.configure(signing_key=None)  # the attacker has no key: checksums are all they can make
    forge_step(env, ex.id, function="os:system", call=call)
    runtime.configure(signing_key=key)
    env.clock.advance(60)
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert not target.exists()
    reason = "is not signed" if key else "does not import"
    assert after.status == SLEEPING and reason in after.error


def test_a_program_row_naming_a_module_outside_the_project_does_not_import_it(env, tmp_path):
    side = tmp_path / "elsewhere"
    side.mkdir()
    (side / "dg_side_effect.py").write_text("import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n")
    sys.path.insert(0, str(side))
    try:
        ex = start(env, "waits")
        sql(env, "UPDATE executions SET function = 'dg_side_effect:main', mac = NULL WHERE id = ?", (ex.id,))
        env.runner.claim_and_advance(ex.id)
        assert "dg_side_effect" not in sys.modules and not (side / "dg_side_effect.ran").exists()
        assert "does not import" in env.store.get(ex.id).error
    finally:
        sys.path.remove(str(side))


def test_a_step_function_a_worker_could_not_find_again_is_refused_when_yielded(env):
    """step(os.getcwd): a worker would not import os for it after a crash, so it is refused at once,
    inside the program (where it can be handled), instead of after the crash."""
    source = PROGRAMS + "\n\n@durable\ndef outside():\n    try:\n        yield step(os.getcwd)\n" \
                        "    except TypeError as exc:\n        return str(exc)\n"
    (env.path.parent / f"{env.name}.py").write_text(source)
    ex = start(env, "outside")
    run_until(env, ex.id, FINISHED)
    message = values.load_value(env.store.get(ex.id).result)
    assert "could not be found again by a worker" in message and "allow_modules('posix')" in message


# ============================================================================ item 4: signing


def test_accepted_keys_alone_still_require_a_signature(env):
    g = env.module().yields(1)
    next(g)
    unsigned = runtime.snapshot(g)
    runtime.detach(g)
    runtime.configure(accepted_keys=[KEY])
    with pytest.raises(runtime.SignatureError):
        runtime.restore(unsigned)
    with pytest.raises(runtime.SignatureError):
        runtime.restore(values.sign(unsigned, b"x" * 32))


def test_a_forged_unsigned_snapshot_is_not_run_when_a_key_is_configured(env):
    signed(env)
    ex = start(env, "waits")
    env.runner.claim_and_advance(ex.id)
    runtime.configure(signing_key=None)
    g = env.module().yields("forged")
    next(g)
    forged = runtime.snapshot(g)
    runtime.detach(g)
    sql(env, "UPDATE executions SET snapshot = ? WHERE id = ?", (forged, ex.id))
    env.store.send_signal(ex.id, "go", 1, now=env.clock.now())
    signed(env)
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status != FINISHED and "does not match its signature" in after.error


def test_an_older_signed_snapshot_written_back_does_not_replay_a_committed_step(env, monkeypatch):
    signed(env)
    marks = env.module().MARKS
    ex = start(env, "two_steps")
    states = []  # the sealed columns as each commit left them
    original = env.store.commit

    def keep(change, now):
        written = original(change, now=now)
        states.append(sql(env, "SELECT snapshot, request, steps_started, mac FROM executions WHERE id = ?",
                          (written.id,))[0])
        return written

    monkeypatch.setattr(env.store, "commit", keep)
    env.runner.claim_and_advance(ex.id)
    monkeypatch.setattr(env.store, "commit", original)
    assert marks == ["a", "b"] and env.store.get(ex.id).status == FINISHED
    at_step_a = next(state for state in states if state[1] and '"index": 0' in state[1])
    sql(env, "UPDATE executions SET snapshot = ?, request = ?, steps_started = ?, mac = ?, status = 'pending', "
             "result = NULL WHERE id = ?", (*at_step_a, ex.id))
    marks.clear()
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert marks == [], "a committed step ran again"
    assert after.status != FINISHED and "signature" in after.error


def test_a_snapshot_copied_from_another_execution_is_refused(env):
    signed(env)
    first, second = start(env, "waits"), start(env, "waits")
    for ex in (first, second):
        env.runner.claim_and_advance(ex.id)
    snapshot, mac = sql(env, "SELECT snapshot, mac FROM executions WHERE id = ?", (first.id,))[0]
    sql(env, "UPDATE executions SET snapshot = ?, mac = ? WHERE id = ?", (snapshot, mac, second.id))
    env.store.send_signal(second.id, "go", 1, now=env.clock.now())
    env.runner.claim_and_advance(second.id)
    assert "does not match its signature" in env.store.get(second.id).error


def test_a_sleeping_run_cannot_be_woken_early_by_editing_its_status(env):
    ex = start(env, "sleeps")
    env.runner.claim_and_advance(ex.id)
    sql(env, "UPDATE executions SET status = 'pending', wake_at = NULL WHERE id = ?", (ex.id,))
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == SLEEPING and after.wake_at == pytest.approx(env.clock.now() + 3600, abs=1)


def test_without_a_key_a_flipped_bit_in_a_stored_snapshot_is_detected(env):
    """Issue 11 item 17 too: a checksum seals unsigned rows ('C-1' became 'C-k' and the run finished)."""
    ex = start(env, "holds", "C-1")
    env.runner.claim_and_advance(ex.id)
    env.store.send_signal(ex.id, "go", 1, now=env.clock.now())
    snapshot = sql(env, "SELECT snapshot FROM executions WHERE id = ?", (ex.id,))[0][0]
    sql(env, "UPDATE executions SET snapshot = ? WHERE id = ?", (snapshot.replace(b"C-1", b"C-k"), ex.id))
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == FAILED and "is damaged: its checksum does not match" in after.error


# ============================================================================ item 6: unreadable snapshots


def test_a_snapshot_that_cannot_be_read_fails_its_run_and_the_others_go_on(env):
    """A 564-byte snapshot of shared tuples in a set hung every worker that claimed it."""
    bad, good = start(env, "waits"), start(env, "yields", 1)
    env.runner.claim_and_advance(bad.id)
    g = env.module().holds(None)  # suspended at its wait, with one live local
    next(g)
    envelope = values.open_snapshot(runtime.snapshot(g))[0]
    runtime.detach(g)
    dag = shared_tuple_dag(63, FIRST_VALUE_SLOT + 1)  # inside the list local: T(0) takes the next slot
    envelope[2][5] = [[1, *dag, [4, [0, FIRST_VALUE_SLOT + 1 + 63]]]]
    import msgpack
    crafted = msgpack.packb(envelope, use_bin_type=True)
    assert len(crafted) < 1000
    sql(env, "UPDATE executions SET snapshot = ?, mac = NULL, status = 'pending' WHERE id = ?", (crafted, bad.id))
    env.worker.run_until_idle()
    error = env.store.get(bad.id).error
    assert env.store.get(bad.id).status == FAILED and "cannot be read" in error and "hashing the elements" in error
    assert env.store.get(good.id).status == FINISHED


# ============================================================================ items 10 and 11: failures recorded


@pytest.mark.parametrize("which", ["big", "surrogate", "deep"])
def test_progress_values_that_json_cannot_carry_do_not_stop_the_run(env, which):
    """A progress value over 4,300 digits, or yield "\\ud800", escaped the runner and left the run leased."""
    ex = start(env, "odd_progress", which)
    run_until(env, ex.id, FINISHED)
    assert env.store.get(ex.id).progress is not None


def test_a_raising_getstate_fails_the_run_with_the_reason(env):
    ex = start(env, "sticky")
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == FAILED and "Sticky.__getstate__() raised RuntimeError: no state for you" in after.error
    assert after.lease_owner is None


def test_a_transition_the_store_cannot_take_is_recorded_not_retried(env, monkeypatch):
    ex = start(env, "yields", 1)
    real = env.store.commit
    calls = {"n": 0}

    def refuses_once(change, now):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TypeError("cannot encode this")
        return real(change, now=now)

    monkeypatch.setattr(env.store, "commit", refuses_once)
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == FAILED and "could not record the program's next transition: TypeError" in after.error


@pytest.mark.parametrize("kind", ["sleep-nan", "sleep-inf", "sleep-huge", "wait-nan", "retry-nan"])
def test_requests_check_their_numbers_inside_the_program(env, kind):
    ex = start(env, "bad_request", kind)
    env.runner.claim_and_advance(ex.id)
    after = env.store.get(ex.id)
    assert after.status == FAILED and "ValueError" in after.error and after.wake_at is None


def test_request_numbers(env):
    from runtime import sleep, wait
    from runtime.programs.requests import RetryPolicy
    for bad in (math.nan, math.inf, -1, 1e300, True, "5"):
        with pytest.raises((ValueError, TypeError)):
            sleep(bad)
        with pytest.raises((ValueError, TypeError)):
            wait("x", timeout=bad)
    with pytest.raises(ValueError):
        sleep(until=1e300)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=3, backoff=math.nan)
    assert RetryPolicy(attempts=10, backoff=1, factor=1e6, max_backoff=60).delay(9) == 60  # no overflow
    assert sleep(10).seconds == 10 and wait("x", timeout=0).timeout == 0


# ============================================================================ item 12: one bad row


def test_a_damaged_row_fails_alone_and_the_worker_goes_on(env):
    bad, good = start(env, "yields", 1), start(env, "yields", 2)
    sql(env, "UPDATE executions SET args = 'not json' WHERE id = ?", (bad.id,))
    env.worker.run_until_idle()
    assert env.store.get(good.id).status == FINISHED
    failed = env.store.get(bad.id)
    assert failed.status == FAILED and "column 'args' is not valid JSON" in failed.error


def test_a_damaged_signal_is_skipped_with_a_note(env):
    ex = start(env, "waits")
    env.runner.claim_and_advance(ex.id)
    env.store.send_signal(ex.id, "go", 1, now=env.clock.now())
    sql(env, "UPDATE signals SET payload = '{' WHERE execution_id = ?", (ex.id,))
    env.store.send_signal(ex.id, "go", 2, now=env.clock.now())
    run_until(env, ex.id, FINISHED)
    after = env.store.get(ex.id)
    assert values.load_value(after.result) == 2


def test_the_operator_names_a_module_outside_the_project_and_a_malformed_one_is_refused(env, tmp_path,
                                                                                        monkeypatch):
    """`durable run pkg.flows:f` names its module: it is imported even outside the project directory."""
    monkeypatch.chdir(tmp_path.parent)
    ex = start(env, "yields", 1)
    run_until(env, ex.id, FINISHED)
    for bad in ("../x:f", ".flows:echo", "a..b:f", "flows:", ":f", "flows:1x"):
        with pytest.raises(ProgramError, match="MODULE:FUNCTION"):
            env.runner.start(bad, [])


def test_a_store_error_while_looking_for_timers_does_not_stop_a_worker(env, monkeypatch):
    import threading

    from runtime.programs.store import StoreError

    events: list[tuple[str, str, str]] = []
    worker = Worker(env.store, clock=env.clock, lease=30, on_event=lambda *e: events.append(e))
    real = env.store.next_wake
    failures = {"left": 3}

    def flaky_next_wake(*args: Any, **kwargs: Any):
        if failures["left"]:
            failures["left"] -= 1
            raise StoreError("disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(env.store, "next_wake", flaky_next_wake)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if not failures["left"]:
                break
            threading.Event().wait(0.01)
        ex = start(env, "yields", 1)
        for _ in range(500):
            if env.store.get(ex.id).status == FINISHED:
                break
            threading.Event().wait(0.01)
    finally:
        worker.stop.set()
        thread.join(10)
    assert env.store.get(ex.id).status == FINISHED
    assert [e for e in events if "disk I/O error" in e[2]]
