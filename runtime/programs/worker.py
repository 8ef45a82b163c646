"""Workers: one scheduler thread keeps many claimed programs in flight, commits their transitions in groups,
and runs their steps on a thread pool, until stopped."""
from __future__ import annotations

import os
import queue
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import capability
from .clock import SYSTEM, Clock
from .records import text_of
from .runner import EventSink, Runner
from .store.base import Change, Execution, Store
from .transition import Commit, Flow, RunStep, Transition

_WAKE = object()
"""Put on the worker's queue when there may be new work (a notification, or the poll interval passed)."""


@dataclass
class _Flight:
    """One claimed execution being advanced: its transition and what it asked for last."""

    transition: Transition
    flow: Flow = field(init=False)

    def __post_init__(self) -> None:
        self.flow = self.transition.run()

    @property
    def id(self) -> str:
        return self.transition.execution.id

    def resume(self, value: Any, error: BaseException | None) -> Commit | RunStep | None:
        """Send the answer to its last instruction; its next instruction, or None when it has ended."""
        try:
            return self.flow.throw(error) if error is not None else self.flow.send(value)  # type: ignore[no-any-return]
        except StopIteration:
            return None


class Worker:
    """Claims runnable executions from ``store`` and advances up to ``in_flight`` of them at once, in one
    scheduler thread: program code runs there, transitions that are ready together are written in one
    transaction (``Store.commit_many``), and steps (which may block) run on ``concurrency`` threads.
    Several worker processes may share one store. ``stop`` ends the worker once its programs have
    reached their next commit; it then releases its leases. Leases are renewed for all programs in
    flight every third of ``lease``."""

    def __init__(self, store: Store, *, concurrency: int = 8, in_flight: int = 100, clock: Clock = SYSTEM,
                 lease: float = 30.0, poll: float = 0.5, on_event: EventSink | None = None,
                 migrations: Sequence[str] | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self.store = store
        self.concurrency = concurrency
        self.in_flight = in_flight
        self.clock = clock
        self.lease = lease
        self.poll = poll
        self.on_event = on_event or (lambda execution_id, kind, text: None)
        self.stop = threading.Event()
        self.name = f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.runner = Runner(store, clock=clock, owner=self.name, lease=lease, on_event=on_event, stop=self.stop,
                             migrations=migrations)
        self.advanced = 0  # executions claimed and advanced
        self.commits = 0   # transitions written
        self.batches = 0   # transactions that wrote them
        self.released = 0  # leases given back when the worker stopped

    # ------------------------------------------------------------------ one thread, one program at a time

    def run_until_idle(self, max_transitions: int | None = None) -> int:
        """In this thread: advance executions one by one until none is runnable and, with a virtual clock,
        move time to the next timer while one is due in the future. Returns how many claims were advanced."""
        count = 0
        while not self.stop.is_set() and (max_transitions is None or count < max_transitions):
            if self.runner.claim_and_advance() is not None:
                count += 1
                continue
            wake = self.next_timer()
            if wake is None or not hasattr(self.clock, "advance"):
                break
            self.clock.advance(max(wake - self.clock.now(), 0.0))  # type: ignore[attr-defined]
        return count

    def next_timer(self) -> float | None:
        """When something next becomes runnable by time alone (a timer, a hold, a lapsing lease)."""
        return self.store.next_wake(self.clock.now())

    # ------------------------------------------------------------------ the scheduler

    def run(self) -> None:
        """Work until ``stop`` is set, then let the programs in flight reach their next commit and release
        every lease still held."""
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        listener = threading.Thread(target=self._listen, args=(events,), name=f"{self.name}-listen", daemon=True)
        listener.start()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"{self.name}-step")
        try:
            _Scheduler(self, events, pool).loop()
        finally:
            pool.shutdown(wait=True)
            try:
                self.released = self.store.release(self.name)
            except Exception as exc:  # the store is gone: the leases lapse on their own
                self.on_event("-", "error", f"could not release the worker's leases: {type(exc).__name__}: "
                                            f"{text_of(exc)}")
            listener.join(timeout=1.0)

    def _listen(self, events: queue.SimpleQueue[Any]) -> None:
        """Wake the scheduler when the store says there may be work, or after the poll interval (with
        jitter, so that idle workers do not all poll at once)."""
        while not self.stop.is_set():
            try:
                self.store.wait_for_work(self.poll * random.uniform(0.8, 1.2), self.stop)
            except Exception:  # notifications failed: polling alone still finds the work
                self.stop.wait(self.poll)
            events.put(_WAKE)
        events.put(_WAKE)


class _Scheduler:
    """The loop of ``Worker.run``: claim, advance what is ready to its next instruction, write the
    commits it produced in one group, hand steps to the pool, wait for what comes back."""

    def __init__(self, worker: Worker, events: queue.SimpleQueue[Any], pool: ThreadPoolExecutor) -> None:
        self.worker = worker
        self.store = worker.store
        self.clock = worker.clock
        self.events = events
        self.pool = pool
        self.flights: dict[str, _Flight] = {}
        self.ready: list[tuple[_Flight, Any, BaseException | None]] = []
        self.queued: dict[str, Execution] = {}  # claimed while its previous flight was still ending
        self.want_claim = True
        self.backlog = False  # the last claim was full: more is probably waiting
        self.timer_at: float | None = None  # when a timer or a hold next makes something runnable
        self.renew_at = self.clock.now() + worker.lease / 3

    def loop(self) -> None:
        worker = self.worker
        while not (worker.stop.is_set() and not self.flights and not self.ready):
            self._collect(block=not self.ready and not self._may_claim())
            batch = self._advance()  # before claiming: a flight whose last commit released its run ends here
            if batch:
                self._commit(batch)
            if self._may_claim():
                self._claim()
            self._renew()

    # -- what comes back from the pool and the listener

    def _collect(self, *, block: bool) -> None:
        timeout = self._timeout() if block else 0.0
        try:
            item = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            self._on_timeout()
            return
        while True:
            if item is _WAKE:
                self.want_claim = True
            else:
                flight, outcome = item
                self.ready.append((flight, outcome, None))
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return

    def _timeout(self) -> float:
        now = self.clock.now()
        deadlines = [self.renew_at] if self.flights else []
        if self.timer_at is not None:
            deadlines.append(self.timer_at)
        wait = min(deadlines) - now if deadlines else self.worker.poll
        return min(max(wait, 0.001), self.worker.poll)

    def _on_timeout(self) -> None:
        now = self.clock.now()
        if self.timer_at is not None and self.timer_at <= now:
            self.timer_at = None
            self.want_claim = True

    # -- claiming

    def _may_claim(self) -> bool:
        return self.want_claim and not self.worker.stop.is_set() and len(self.flights) < self.worker.in_flight

    def _claim(self) -> None:
        now = self.clock.now()
        room = self.worker.in_flight - len(self.flights)
        self.want_claim = False
        try:
            claimed = self.store.claim_many(self.worker.name, now=now, lease=self.worker.lease, limit=room,
                                            skip_keys=capability.keys())
            self.backlog = len(claimed) == room
            if not claimed:
                self.timer_at = self.store.next_wake(now)
        except Exception as exc:  # a store error: report it and keep serving, after a pause
            self.worker.on_event("-", "error", f"could not claim work: {type(exc).__name__}: {text_of(exc)}")
            self.clock.sleep(self.worker.poll, self.worker.stop)  # then try again
            self.want_claim = True
            return
        for execution in claimed:
            self._start(execution)

    def _start(self, execution: Execution) -> None:
        if execution.id in self.flights:  # claimed again before its flight ended (our lease had lapsed)
            self.queued[execution.id] = execution
            return
        flight = _Flight(Transition(self.worker.runner, execution))
        self.flights[execution.id] = flight
        self.ready.append((flight, None, None))
        self.worker.advanced += 1

    # -- advancing

    def _advance(self) -> list[tuple[_Flight, Change]]:
        """Run every ready program to its next instruction: commits are gathered, steps sent to the pool."""
        batch: list[tuple[_Flight, Change]] = []
        ready, self.ready = self.ready, []
        for flight, value, error in ready:
            try:
                instruction = flight.resume(value, error)
            except Exception as exc:  # a bug in the transition itself: drop it, its lease lapses
                self.worker.on_event(flight.id, "error", f"the worker failed advancing it: {type(exc).__name__}: "
                                                         f"{text_of(exc)}")
                instruction = None
            if instruction is None:
                del self.flights[flight.id]
                if flight.id in self.queued:
                    self._start(self.queued.pop(flight.id))
                if self.backlog:
                    self.want_claim = True
            elif isinstance(instruction, Commit):
                batch.append((flight, instruction.change))
            else:
                self.pool.submit(self._run_step, flight, instruction)
        return batch

    def _run_step(self, flight: _Flight, step: RunStep) -> None:
        outcome = step.call()
        self.events.put((flight, outcome))

    def _commit(self, batch: list[tuple[_Flight, Change]]) -> None:
        """One transaction for the whole group; each change gets its own result (or error) back."""
        try:
            results: list[Any] = list(self.store.commit_many([change for _, change in batch], now=self.clock.now()))
        except Exception as exc:  # the transaction failed: nothing was written, every change gets the error
            results = [exc] * len(batch)
        self.worker.batches += 1
        for (flight, _), result in zip(batch, results):
            if isinstance(result, BaseException):
                self.ready.append((flight, None, result))
            else:
                self.worker.commits += 1
                self.ready.append((flight, result, None))

    # -- leases

    def _renew(self) -> None:
        now = self.clock.now()
        if now < self.renew_at:
            return
        self.renew_at = now + self.worker.lease / 3
        if not self.flights:
            return
        try:
            self.store.renew(self.worker.name, list(self.flights), until=now + self.worker.lease)
        except Exception as exc:  # the next commit of each finds out whether its lease is still ours
            self.worker.on_event("-", "error", f"could not renew leases: {type(exc).__name__}: {text_of(exc)}")

