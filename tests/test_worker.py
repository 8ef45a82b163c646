"""The worker (README: "Workers"): many programs in flight in one scheduler thread, their transitions
written in groups, steps on a pool, leases renewed, taken over and released, runs that cannot resume
set aside — on SQLite, PostgreSQL and the in-memory store (the ``backend`` fixture), with the real clock.

Results are compared with the same generators driven natively (``test_programs.drive_natively``)."""
from __future__ import annotations

import importlib
import itertools
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from runtime import values
from runtime.programs.runner import Runner
from runtime.programs.store import FINISHED, TERMINAL, Store
from runtime.programs.worker import Worker
from test_programs import drive_natively, native_responses

_ids = itertools.count(1)

PROGRAMS = '''
import threading
from runtime import checkpoint, durable, sleep, step, wait

GATE = threading.Event()
BARRIER = threading.Barrier(4, timeout=20)


def double(x):
    return 2 * x


def gated(x):
    GATE.wait(30)
    return x


def together(x):
    BARRIER.wait()  # passes only when four steps run at the same time
    return x


@durable
def counter(n):
    total = 0
    for i in range(n):
        yield checkpoint()
        total += i
    return total


@durable
def doubler(n):
    total = 0
    for i in range(n):
        total += yield step(double, i)
    return total


@durable
def waits_then_gates(x):
    got = yield step(gated, x)
    return got


@durable
def meets(x):
    return (yield step(together, x))


@durable
def alternates(n):
    total = 0
    for i in range(n):
        yield sleep(0.001)
        total += yield step(double, i)
    return total


@durable
def approval():
    decision = yield wait("approve")
    return decision
'''


class Env:
    def __init__(self, store: Store, name: str, folder: Path) -> None:
        self.store, self.name, self.folder = store, name, folder
        self.events: list[tuple[str, str, str]] = []
        self.runner = Runner(store, lease=30)

    def module(self) -> Any:
        return importlib.import_module(self.name)

    def start(self, function: str, *args: Any) -> str:
        return self.runner.start(f"{self.name}:{function}", list(args)).id

    def worker(self, **options: Any) -> Worker:
        options.setdefault("poll", 0.02)
        return Worker(self.store, on_event=lambda *e: self.events.append(e), **options)

    def wait_for(self, ids: list[str], done: Callable[[Any], bool] = lambda e: e.status in TERMINAL,
                 seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not all(done(self.store.get(i)) for i in ids):
            assert time.monotonic() < deadline, [(i, self.store.get(i).status) for i in ids]
            time.sleep(0.02)


@pytest.fixture
def env(backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    name = f"dg_worker_programs_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(PROGRAMS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    importlib.invalidate_caches()
    store = backend.open()
    try:
        yield Env(store, name, tmp_path)
    finally:
        store.close()
        sys.modules.pop(name, None)


class Running:
    """A worker's ``run()`` in a thread, stopped and joined on exit."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.worker.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.error is None, f"the worker raised {self.error!r}"

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as error:  # noqa: BLE001 - reported by __exit__
            self.error = error


def test_many_programs_in_flight_share_commits_and_end_as_natively(env: Env) -> None:
    module = env.module()
    ids = [env.start("counter", 20) for _ in range(30)] + [env.start("doubler", 5) for _ in range(10)]
    worker = env.worker(in_flight=100)
    with Running(worker):
        env.wait_for(ids)
    expected_counter = drive_natively(module.counter(20), native_responses)
    expected_doubler = drive_natively(module.doubler(5), native_responses)
    results = [values.load_value(env.store.get(i).result) for i in ids]
    assert results == [expected_counter] * 30 + [expected_doubler] * 10
    # 30 × 21 + 10 × 11 commits (one per request plus the ending), in far fewer transactions
    assert worker.commits == 30 * 21 + 10 * 11
    assert worker.batches * 4 <= worker.commits, (worker.batches, worker.commits)
    assert worker.advanced == 40  # each claimed once: a checkpoint or a step does not give the program up
    assert all(e.lease_owner is None for e in env.store.list())


def test_a_run_released_by_its_last_commit_and_due_at_once_is_claimed_again_safely(env: Env) -> None:
    """A short sleep releases the run and makes it due before its flight has ended: the worker may claim
    it again while it still holds the old flight (seen: a KeyError that killed the worker)."""
    module = env.module()
    ids = [env.start("alternates", 10) for _ in range(20)]
    worker = env.worker(poll=0.01)
    with Running(worker):
        env.wait_for(ids)
    expected = drive_natively(module.alternates(10), native_responses)
    assert [values.load_value(env.store.get(i).result) for i in ids] == [expected] * 20
    assert worker.advanced >= 20 * 10  # every sleep gave the run up


def test_steps_run_on_the_pool_while_the_scheduler_goes_on(env: Env) -> None:
    ids = [env.start("meets", i) for i in range(4)]
    with Running(env.worker(concurrency=4)):
        env.wait_for(ids)
    assert [values.load_value(env.store.get(i).result) for i in ids] == [0, 1, 2, 3]


def test_in_flight_bounds_what_one_worker_holds(env: Env) -> None:
    module = env.module()
    ids = [env.start("waits_then_gates", i) for i in range(6)]
    worker = env.worker(in_flight=2, concurrency=8)
    with Running(worker):
        env.wait_for(ids[:2], done=lambda e: e.lease_owner == worker.name)
        time.sleep(0.2)
        assert sum(e.lease_owner == worker.name for e in env.store.list()) == 2
        module.GATE.set()
        env.wait_for(ids)
    assert [values.load_value(env.store.get(i).result) for i in ids] == list(range(6))


def test_stopping_releases_every_lease_once_steps_return(env: Env) -> None:
    module = env.module()
    ids = [env.start("waits_then_gates", i) for i in range(3)]
    worker = env.worker()
    running = Running(worker)
    with running:
        env.wait_for(ids, done=lambda e: e.lease_owner == worker.name)
        worker.stop.set()
        time.sleep(0.1)
        assert running.thread.is_alive()  # its steps are still running: their results must be committed
        module.GATE.set()
    rows = [env.store.get(i) for i in ids]
    assert all(e.lease_owner is None and e.status == "pending" for e in rows)
    assert [s.status for i in ids for s in env.store.steps(i)] == ["done"] * 3  # kept, not run again
    with Running(env.worker()):
        env.wait_for(ids)
    assert [values.load_value(env.store.get(i).result) for i in ids] == [0, 1, 2]


def test_a_lapsed_lease_is_taken_over_at_once_and_the_log_says_from_whom(env: Env) -> None:
    execution_id = env.start("counter", 3)
    dead = env.store.claim("worker-dead-1", now=time.time(), lease=0.3)
    assert dead is not None and dead.id == execution_id
    with Running(env.worker()):
        env.wait_for([execution_id])
    assert env.store.get(execution_id).status == FINISHED
    assert [e for e in env.events if e[1] == "takeover"] == [
        (execution_id, "takeover", "took over from worker-dead-1 (its lease lapsed)")]


def test_a_run_that_cannot_resume_with_a_queued_signal_is_set_aside_not_claimed_in_a_loop(env: Env) -> None:
    execution_id = env.start("approval")
    with Running(env.worker()):
        env.wait_for([execution_id], done=lambda e: e.status == "waiting")
    # a deploy removes the function; the signal it waits for arrives
    source = env.folder / f"{env.name}.py"
    source.write_text(PROGRAMS.replace("def approval():", "def renamed():"), encoding="utf-8")
    sys.modules.pop(env.name, None)
    importlib.invalidate_caches()
    env.store.send_signal(execution_id, "approve", "yes", now=time.time())
    before = env.store.get(execution_id).version
    with Running(env.worker()):
        env.wait_for([execution_id], done=lambda e: e.held_until is not None)
        time.sleep(0.5)  # forty poll intervals
    held = env.store.get(execution_id)
    assert held.version - before <= 2  # claimed once, set aside once
    assert held.status == "waiting" and held.lease_owner is None and held.held_until > time.time() + 50
    assert "has no function 'approval'" in held.error and "set aside" in held.error
    errors = [e for e in env.events if e[1] == "error"]
    assert len(errors) == 1 and errors[0][0] == execution_id


def test_concurrent_first_imports_of_a_program_module_wait_for_each_other(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cold compile cache, threads resuming runs of one module at once must all find its function
    (seen: 7 of 8 runs set aside with "module has no function" while the first thread was importing)."""
    from runtime.programs.loading import load_function

    name = f"dg_slow_import_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(
        "import time\nfrom runtime import checkpoint, durable\ntime.sleep(0.3)\n\n\n"
        "@durable\ndef late():\n    yield checkpoint()\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    importlib.invalidate_caches()
    found: list[Any] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            found.append(load_function(f"{name}:late"))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.01)
        for thread in threads:
            thread.join(30)
    finally:
        sys.modules.pop(name, None)
    assert errors == [] and len(found) == 8 and len({id(f) for f in found}) == 1
