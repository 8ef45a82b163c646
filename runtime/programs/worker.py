"""Workers: one scheduler thread keeps many claimed programs in flight, commits their transitions in groups,
and runs their steps on a thread pool, until stopped.

The scheduler thread owns an asyncio loop (the runner's), which it turns while it waits for work: async
programs advance there as tasks, their transient awaits overlapping, and ``async def`` steps run there
too. Everything else — generator programs, the transitions' snapshots, detaches and commits — runs in the
same thread while the loop is not turning, so program code never runs beside a snapshot.
"""
from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
import uuid
from asyncio.events import _get_running_loop
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import capability
from .clock import SYSTEM, Clock
from .composite import NextOutcome
from .pump import PumpTask
from .records import text_of
from .runner import EventSink, Runner
from .store.base import Change, Execution, Store
from .transition import Advance, Commit, Flow, Interrupted, RunStep, StepOutcome, Transition

_WAKE = object()
"""Posted to the scheduler when there may be new work (a notification, or the poll interval passed)."""

_NOTHING = object()
"""What waiting on the scheduler's inbox gives when nothing was posted in time."""

Instruction = Commit | RunStep | Advance | NextOutcome


@dataclass(eq=False)
class _Flight:
    """One claimed execution being advanced: its transition and what it asked for last."""

    transition: Transition
    flow: Flow = field(init=False)
    advancing: PumpTask | None = None  # the task of its program's advance, while it runs on the loop
    on_loop: bool = False  # an async program: it has advanced on the loop
    parts: dict[tuple[int, int], RunStep] = field(default_factory=dict)  # composite steps started (index, attempt)
    ended: list[_PartDone] = field(default_factory=list)  # composite steps ended, not yet asked for
    wanting: NextOutcome | None = None  # it waits for the next of its composite steps to end

    def take_ended(self, wanted: NextOutcome) -> tuple[RunStep, StepOutcome] | None:
        """The first ended step of those ``wanted`` names, as the transition holds it (removed)."""
        named = {_part_key(step): step for step in wanted.steps}
        for position, done in enumerate(self.ended):
            key = _part_key(done.step)
            if key in named:
                del self.ended[position]
                self.parts.pop(key, None)
                return named[key], done.outcome
        return None

    def __post_init__(self) -> None:
        self.flow = self.transition.run()

    @property
    def id(self) -> str:
        return self.transition.execution.id

    def resume(self, value: Any, error: BaseException | None) -> Instruction | None:
        """Send the answer to its last instruction; its next instruction, or None when it has ended."""
        try:
            return self.flow.throw(error) if error is not None else self.flow.send(value)  # type: ignore[no-any-return]
        except StopIteration:
            return None


@dataclass
class _PartDone:
    """A step of a composite request ended (posted by the pool or the loop)."""

    step: RunStep
    outcome: StepOutcome


def _part_key(step: RunStep) -> tuple[int, int]:
    return step.record.index, step.record.attempts


class _Inbox:
    """What the scheduler waits for: outcomes (of steps, of advances) and wake-ups, posted from any thread.
    While the loop has work, waiting turns it, so that the tasks on it run meanwhile; else the scheduler
    blocks on the queue alone, as cheaply as a worker without async programs can."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.turning = False  # the scheduler waits by turning the loop: a post must stop it
        self.closed = False

    def post(self, item: Any) -> None:
        """From any thread (the pool's, the listener's)."""
        if self.closed:
            return
        self.queue.put(item)
        if self.turning:  # read after the put: a wait that missed the item has set it, and gets the wake-up
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed meanwhile: the worker has ended
                pass

    def post_here(self, item: Any) -> None:
        """From the loop's own callbacks (a task done)."""
        self.queue.put(item)
        if self.turning:
            self.loop.stop()

    def wait(self, timeout: float, *, turn: bool) -> Any:
        """The first item posted within ``timeout`` seconds, or _NOTHING; the loop turns meanwhile if ``turn``."""
        if not turn:
            try:
                return self.queue.get(timeout=timeout)
            except queue.Empty:
                return _NOTHING
        self.turning = True
        try:
            if self.queue.empty():
                timer = self.loop.call_later(timeout, self.loop.stop)
                try:
                    self.loop.run_forever()
                finally:
                    timer.cancel()
        finally:
            self.turning = False
        return self.take()

    def turn(self) -> None:
        """Run the loop's callbacks that are due, once, without waiting."""
        self.loop.call_soon(self.loop.stop)
        self.loop.run_forever()

    def take(self) -> Any:
        """The next item posted, or _NOTHING."""
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return _NOTHING


class Worker:
    """Claims runnable executions from ``store`` and advances up to ``in_flight`` of them at once, in one
    scheduler thread: program code runs there, transitions that are ready together are written in one
    transaction (``Store.commit_many``), and steps (which may block) run on ``concurrency`` threads.
    Several worker processes may share one store. ``stop`` ends the worker once its programs have
    reached their next commit (steps that have started run to their end); an async program still in a
    transient await ``grace`` seconds after the stop is detached, and continues elsewhere from its last
    commit. It then releases its leases. Leases are renewed for all programs in flight every third of
    ``lease``.

    Async programs and ``async def`` steps run as tasks on an event loop the scheduler thread turns while
    it waits, so that their transient awaits overlap (and never hold up the other programs, the commits
    or the lease renewals); plain steps run on the pool."""

    def __init__(self, store: Store, *, concurrency: int = 8, in_flight: int = 100, clock: Clock = SYSTEM,
                 lease: float = 30.0, poll: float = 0.5, on_event: EventSink | None = None,
                 migrations: Sequence[str] | None = None, grace: float = 1.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        if grace < 0:
            raise ValueError("grace must not be negative")
        self.grace = grace
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
        every lease still held; the event loop is closed at the end (the runner makes a new one if needed).
        RuntimeError when an event loop is running in this thread already."""
        if _get_running_loop() is not None:
            raise RuntimeError("Worker.run() blocks its thread and turns an event loop of its own: call it from a "
                               "thread where no event loop runs (from async code: await asyncio.to_thread(worker.run))")
        inbox = _Inbox(self.runner.event_loop())
        listener = threading.Thread(target=self._listen, args=(inbox,), name=f"{self.name}-listen", daemon=True)
        listener.start()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"{self.name}-step")
        scheduler = _Scheduler(self, inbox, pool)
        self.runner.settle_tasks = False
        try:
            scheduler.loop()
        finally:
            scheduler.drop()
            pool.shutdown(wait=True)
            inbox.closed = True
            try:
                self.released = self.store.release(self.name)
            except Exception as exc:  # the store is gone: the leases lapse on their own
                self.on_event("-", "error", f"could not release the worker's leases: {type(exc).__name__}: "
                                            f"{text_of(exc)}")
            listener.join(timeout=1.0)
            self.runner.settle_tasks = True
            self.runner.close()

    def _listen(self, inbox: _Inbox) -> None:
        """Wake the scheduler when the store says there may be work, or after the poll interval (with
        jitter, so that idle workers do not all poll at once)."""
        while not self.stop.is_set():
            try:
                self.store.wait_for_work(self.poll * random.uniform(0.8, 1.2), self.stop)
            except Exception:  # notifications failed: polling alone still finds the work
                self.stop.wait(self.poll)
            inbox.post(_WAKE)
        inbox.post(_WAKE)


class _Scheduler:
    """The loop of ``Worker.run``: claim, advance what is ready to its next instruction, write the
    commits it produced in one group, hand steps to the pool (async steps and advances of async programs
    to the loop), wait for what comes back (turning the loop)."""

    def __init__(self, worker: Worker, inbox: _Inbox, pool: ThreadPoolExecutor) -> None:
        self.worker = worker
        self.store = worker.store
        self.clock = worker.clock
        self.inbox = inbox
        self.event_loop = inbox.loop
        self.pool = pool
        self.on_loop = 0  # async programs in flight, and async steps running: the loop has work
        self.loop_used = False  # tasks may be left on the loop (since the last look)
        self.advancing: set[_Flight] = set()  # flights whose program advances on the loop
        self.detach_at: float | None = None  # (monotonic) once stopped: when programs still advancing are detached
        self.flights: dict[str, _Flight] = {}
        self.ready: list[tuple[_Flight, Any, BaseException | None]] = []
        self.queued: dict[str, Execution] = {}  # claimed while its previous flight was still ending
        self.want_claim = True
        self.backlog = False  # the last claim was full: more is probably waiting
        self.timer_at: float | None = None  # when a timer or a hold next makes something runnable
        self.wanting: set[_Flight] = set()  # flights waiting for the next of their composite steps to end
        self.renew_at = self.clock.now() + worker.lease / 3

    def loop(self) -> None:
        worker = self.worker
        while not (worker.stop.is_set() and not self.flights and not self.ready):
            self._collect(block=not self.ready and not self._may_claim())
            if self.wanting:
                self._past_deadline()
            if worker.stop.is_set() and self.advancing:
                self._detach_overdue()
            batch = self._advance()  # before claiming: a flight whose last commit released its run ends here
            if batch:
                self._commit(batch)
            if self._may_claim():
                self._claim()
            self._renew()

    def drop(self) -> None:
        """``loop`` ended early (an exception): end the transitions still in flight here (their programs are
        detached; the leases lapse or are released)."""
        for flight in list(self.flights.values()):
            try:
                flight.flow.close()
            except Exception:  # noqa: BLE001 - dropped anyway: its lease lapses
                pass
        self.flights.clear()

    # -- what comes back from the pool, the loop and the listener

    def _collect(self, *, block: bool) -> None:
        if block:
            item = self.inbox.wait(self._timeout(), turn=self._loop_has_work())
        else:
            if self.on_loop:
                self.inbox.turn()
            item = self.inbox.take()
        if item is _NOTHING:
            self._on_timeout()
            return
        while item is not _NOTHING:
            self._receive(item)
            item = self.inbox.take()

    def _loop_has_work(self) -> bool:
        """Async programs or steps in flight, or tasks still ending (those a program left, cancelled)."""
        if self.on_loop:
            return True
        if self.loop_used:  # (a worker that never ran async code does not look)
            self.loop_used = bool(asyncio.all_tasks(self.event_loop))
        return self.loop_used

    def _receive(self, item: Any) -> None:
        if item is _WAKE:
            self.want_claim = True
            return
        flight, outcome = item
        if type(outcome) is _PartDone:
            if self.flights.get(flight.id) is flight:  # (else its transition has ended: an abandoned step)
                flight.ended.append(outcome)
                if flight.wanting is not None:
                    self._give_ended(flight, flight.wanting)
            return
        if type(outcome) is PumpTask:
            if flight.advancing is not outcome:  # detached while it ran: its transition has ended
                return
            flight.advancing = None
            self.advancing.discard(flight)
            outcome = outcome.pump.outcome(outcome)
        self.ready.append((flight, outcome, None))

    def _timeout(self) -> float:
        now = self.clock.now()
        deadlines = [self.renew_at] if self.flights else []
        if self.timer_at is not None:
            deadlines.append(self.timer_at)
        wait = min(deadlines) - now if deadlines else self.worker.poll
        if self.detach_at is not None and self.advancing:
            wait = min(wait, self.detach_at - time.monotonic())
        deadlines = [f.wanting.deadline for f in self.wanting if f.wanting and f.wanting.deadline is not None]
        if deadlines:
            wait = min(wait, min(deadlines) - now)
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
        """Run every ready program to its next instruction: commits are gathered, steps sent to the pool (or
        the loop), advances of async programs started on the loop."""
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
                self._end(flight)
            elif isinstance(instruction, Commit):
                batch.append((flight, instruction.change))
            elif isinstance(instruction, Advance):
                self._start_advance(flight, instruction)
            elif isinstance(instruction, NextOutcome):
                self._next_outcome(flight, instruction)
            else:
                self._start_step(flight, instruction)
        return batch

    def _next_outcome(self, flight: _Flight, wanted: NextOutcome) -> None:
        """Start the composite steps not started yet; the transition gets the next to end, or None at the
        deadline."""
        for step in wanted.steps:
            if _part_key(step) not in flight.parts:
                flight.parts[_part_key(step)] = step
                self._start_step(flight, step, part=True)
        self._give_ended(flight, wanted)

    def _give_ended(self, flight: _Flight, wanted: NextOutcome) -> None:
        ended = flight.take_ended(wanted)
        if ended is None:
            flight.wanting = wanted
            self.wanting.add(flight)
            return
        flight.wanting = None
        self.wanting.discard(flight)
        self.ready.append((flight, ended, None))

    def _past_deadline(self) -> None:
        now = self.clock.now()
        for flight in list(self.wanting):
            wanted = flight.wanting
            if wanted is None or self.flights.get(flight.id) is not flight:
                self.wanting.discard(flight)
            elif wanted.deadline is not None and wanted.deadline <= now:  # its timer or its signal poll is due
                flight.wanting = None
                self.wanting.discard(flight)
                self.ready.append((flight, None, None))

    def _end(self, flight: _Flight) -> None:
        self.wanting.discard(flight)
        del self.flights[flight.id]
        if flight.on_loop:
            self.on_loop -= 1
        if flight.id in self.queued:
            self._start(self.queued.pop(flight.id))
        if self.backlog:
            self.want_claim = True

    def _start_advance(self, flight: _Flight, advance: Advance) -> None:
        """Advance an async program as a task on the loop; its outcome is posted when it is done."""
        if not flight.on_loop:
            flight.on_loop = self.loop_used = True
            self.on_loop += 1
        task = flight.advancing = advance.pump.start(advance.action)
        self.advancing.add(flight)
        task.add_done_callback(lambda done: self.inbox.post_here((flight, done)))

    def _start_step(self, flight: _Flight, step: RunStep, *, part: bool = False) -> None:
        """A plain step on the pool, an ``async def`` step as a task on the loop (``part``: a step of a
        composite request, whose outcome the transition asks for with ``NextOutcome``)."""
        if not step.is_async:
            self.pool.submit(self._run_step, flight, step, part)
            return
        self.on_loop += 1
        self.loop_used = True
        task = self.event_loop.create_task(step.call_async(), name=f"step {step.record.function}")
        task.add_done_callback(lambda done: self._step_done(flight, step, done, part))

    def _step_done(self, flight: _Flight, step: RunStep, task: asyncio.Task[StepOutcome], part: bool) -> None:
        self.on_loop -= 1
        if task.cancelled():  # the loop closed under it (the worker ended early)
            return
        self.inbox.post_here((flight, _PartDone(step, task.result()) if part else task.result()))

    def _run_step(self, flight: _Flight, step: RunStep, part: bool) -> None:
        outcome = step.call()
        self.inbox.post((flight, _PartDone(step, outcome) if part else outcome))

    def _detach_overdue(self) -> None:
        """Once stopped: programs still in a transient await ``grace`` seconds later are interrupted (their
        transitions give the runs up and detach them; their tasks are cancelled)."""
        now = time.monotonic()
        if self.detach_at is None:
            self.detach_at = now + self.worker.grace
        if now < self.detach_at:
            return
        for flight in list(self.advancing):
            if flight.advancing is not None and flight.advancing.done():
                continue  # done: its outcome is posted, it reaches its next commit
            flight.advancing = None
            self.advancing.discard(flight)
            self.ready.append((flight, None, Interrupted()))

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

