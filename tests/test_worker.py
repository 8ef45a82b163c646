"""The worker (README: "Workers"): many programs in flight in one scheduler thread, their transitions
written in groups, steps on a pool, leases renewed, taken over and released, runs that cannot resume
set aside — on SQLite, PostgreSQL and the in-memory store (the ``backend`` fixture), with the real clock.
Async programs advance as tasks on the scheduler thread's event loop: their transient awaits overlap,
and hold up neither the other programs nor the lease renewals; ``async def`` steps run on that loop.

Results are compared with the same generators driven natively (``test_programs.drive_natively``)."""
from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
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
import asyncio
import json
import os
import threading
from runtime import checkpoint, current_step, durable, sleep, step, wait

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


def record(*what):
    with open("effects.log", "a") as fh:
        fh.write(json.dumps(what) + "\\n")


def where():
    return threading.current_thread().name


async def fetch(x):
    await asyncio.sleep(0.001)
    return [2 * x, current_step().idempotency_key, threading.current_thread().name]


@durable
async def naps(x, seconds):
    first = await step(double, x)
    record("napping", x)
    await asyncio.sleep(seconds)  # transient: runs again after a crash
    await checkpoint()
    return first + await step(double, 1)


@durable
async def mixed(n):
    total, keys, threads = 0, [], []
    for i in range(n):
        total += await step(double, i)
        threads.append(await step(where))
        await asyncio.sleep(0.001)
        value, key, thread = await step(fetch, i)
        total += value
        keys.append(key)
        threads.append(thread)
        await sleep(0.001)
    return [total, keys, threads]


async def background():
    try:
        await asyncio.sleep(3600)
    finally:
        record("background cancelled")


@durable
async def naps_on(x):
    first = await step(double, x)
    asyncio.get_running_loop().create_task(background())
    record("napping", os.getpid())
    try:
        await asyncio.sleep(float(os.environ.get("DG_NAP", "3600")))
    finally:
        record("finally ran")  # a durable frame\'s clean-up: not run when the worker detaches it
    return first + await step(double, 2)
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
        # (its steps asked for: committed, then handed to the pool whatever comes; a claim alone is not enough,
        # a stop before the first commit releases the run without starting its step)
        env.wait_for(ids, done=lambda e: e.lease_owner == worker.name and bool(env.store.steps(e.id)))
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


# ---------------------------------------------------------------------------------------------- async programs


@pytest.fixture
def no_asyncio_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No task destroyed while pending, no exception never retrieved, no loop left unclosed."""
    with caplog.at_level(logging.ERROR, logger="asyncio"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert not [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
                and "loop" in str(w.message)]


def effects(env: Env) -> list[list[Any]]:
    path = env.folder / "effects.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("backend", ["sqlite", "memory"], indirect=True)
def test_async_programs_overlap_their_transient_awaits_and_still_share_commits(env: Env,
                                                                              no_asyncio_errors: None) -> None:
    ids = [env.start("naps", i, 0.2) for i in range(20)]
    worker = env.worker()
    started = time.monotonic()
    with Running(worker):
        env.wait_for(ids)
        took = time.monotonic() - started
    assert [values.load_value(env.store.get(i).result) for i in ids] == [2 * i + 2 for i in range(20)]
    assert took < 20 * 0.2 / 2, took  # one after another they would take 4 s
    assert worker.commits == 20 * 6  # two steps (request, result), a checkpoint, the end
    assert worker.batches * 3 <= worker.commits, (worker.batches, worker.commits)
    assert worker.runner._loop is None  # closed at the end of run()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_sync_and_async_programs_share_a_worker_and_async_steps_run_on_its_loop(env: Env,
                                                                               no_asyncio_errors: None) -> None:
    module = env.module()
    sync = [env.start("doubler", 5) for _ in range(3)] + [env.start("alternates", 3) for _ in range(3)]
    mixed = [env.start("mixed", 3) for _ in range(4)]
    worker = env.worker(concurrency=4)
    running = Running(worker)
    running.thread.name = "the-scheduler"
    with running:
        env.wait_for(sync + mixed)
    assert [values.load_value(env.store.get(i).result) for i in sync] == \
        [drive_natively(module.doubler(5), native_responses)] * 3 + \
        [drive_natively(module.alternates(3), native_responses)] * 3
    for execution_id in mixed:
        total, keys, threads = values.load_value(env.store.get(execution_id).result)
        assert total == 2 * (0 + 1 + 2) * 2
        assert keys == [f"{execution_id}:{3 * i + 2}:1" for i in range(3)]  # current_step() in the async step
        assert threads[1::2] == ["the-scheduler"] * 3  # async steps: tasks on the scheduler thread's loop
        assert all(t.startswith(f"{worker.name}-step") for t in threads[::2])  # plain steps: the pool


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_leases_are_renewed_while_a_program_is_in_a_transient_await(env: Env, no_asyncio_errors: None) -> None:
    execution_id = env.start("naps", 1, 0.45)
    worker = env.worker(lease=0.3)
    rival = env.worker(lease=0.3)
    with Running(worker):
        env.wait_for([execution_id], done=lambda e: e.lease_owner == worker.name and e.steps_started == 1)
        with Running(rival):  # it would take the run over if its lease lapsed during the 0.45 s nap
            env.wait_for([execution_id])
    assert values.load_value(env.store.get(execution_id).result) == 4
    assert rival.advanced == 0 and worker.advanced == 1
    assert not [e for e in env.events if e[1] in ("takeover", "conflict")], env.events


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_stopping_lets_short_transient_awaits_reach_their_commit_and_detaches_long_ones(
        env: Env, no_asyncio_errors: None) -> None:
    short, long = env.start("naps", 1, 0.3), env.start("naps", 2, 3600)
    worker = env.worker(grace=0.8)
    running = Running(worker)
    with running:
        deadline = time.monotonic() + 30
        while sorted(e[1] for e in effects(env)) != [1, 2] and time.monotonic() < deadline:
            time.sleep(0.01)  # both are in their transient naps
        stopped = time.monotonic()
        worker.stop.set()
        running.thread.join(10)
        took = time.monotonic() - stopped
    assert 0.7 < took < 3, took  # the grace, then out (not the hour)
    rows = {i: env.store.get(i) for i in (short, long)}
    assert all(e.lease_owner is None and e.status == "pending" for e in rows.values())
    assert rows[short].request == {"kind": "checkpoint"}  # its nap ended within the grace: committed
    assert rows[long].request["kind"] == "step"  # detached: continues from the step's result
    assert [e[0] for e in env.events if e[1] == "detached"] == [long]
    with Running(env.worker(grace=0)):  # (which claims the long nap again: detached at once)
        env.wait_for([short])
    assert values.load_value(env.store.get(short).result) == 4


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sigterm_detaches_a_program_in_a_transient_await_and_cancels_its_tasks(
        env: Env, backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    execution_id = env.start("naps_on", 5)
    root = Path(__file__).resolve().parent.parent
    worker = subprocess.Popen(
        [sys.executable, "-c", "from transpiler.cli import run; run()", "worker", "--store", backend.url,
         "--poll", "0.05", "--grace", "0.2"], cwd=str(env.folder), env=dict(os.environ, PYTHONPATH=str(root)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not effects(env) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # into its nap
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0 and took < 10, (worker.returncode, took, err)
    assert "Traceback" not in err and "Task was destroyed" not in err and "never retrieved" not in err, err
    assert f"[{execution_id}] detached: the worker is stopping while the program is in a transient await" in err
    assert [e[0] for e in effects(env)] == ["napping", "background cancelled"]  # no durable finally block ran
    row = env.store.get(execution_id)
    assert row.lease_owner is None and row.status == "pending" and row.request["kind"] == "step"
    monkeypatch.setenv("DG_NAP", "0")
    with Running(env.worker()):  # elsewhere, from its last commit: the step is not run again
        env.wait_for([execution_id])
    assert values.load_value(env.store.get(execution_id).result) == 10 + 4
    assert [e[0] for e in effects(env)][2:] == ["napping", "finally ran", "background cancelled"]
    assert [(s.index, s.attempts) for s in env.store.steps(execution_id)] == [(0, 1), (1, 1)]


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
def test_run_is_refused_inside_a_running_event_loop(env: Env) -> None:
    async def main() -> None:
        env.worker().run()

    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread\(worker\.run\)"):
        asyncio.run(main())
