"""Workers: threads that claim due executions from a store and advance them, until stopped."""
from __future__ import annotations

import os
import threading
import uuid

from .clock import SYSTEM, Clock
from .runner import EventSink, Runner
from .store.base import SLEEPING, WAITING, Store


class Worker:
    """``concurrency`` threads, each with its own runner, claiming runnable executions from the store
    (several worker processes may share one store). ``stop`` ends them after their current transition.
    Each runner renews its lease while a step runs."""

    def __init__(self, store: Store, *, concurrency: int = 1, clock: Clock = SYSTEM, lease: float = 30.0,
                 poll: float = 0.5, on_event: EventSink | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store = store
        self.concurrency = concurrency
        self.clock = clock
        self.lease = lease
        self.poll = poll
        self.on_event = on_event
        self.stop = threading.Event()
        self.name = f"worker-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._runners = [Runner(store, clock=clock, owner=f"{self.name}-{i}", lease=lease, on_event=on_event,
                                stop=self.stop) for i in range(concurrency)]
        self.advanced = 0

    def run(self) -> None:
        """Work until ``stop`` is set."""
        threads = [threading.Thread(target=self._loop, args=(runner,), name=runner.owner, daemon=True)
                   for runner in self._runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def run_until_idle(self, max_transitions: int | None = None) -> int:
        """In this thread: advance executions until none is runnable and, with a virtual clock, move
        time to the next timer while one is due in the future. Returns how many claims were advanced."""
        runner = self._runners[0]
        count = 0
        while not self.stop.is_set() and (max_transitions is None or count < max_transitions):
            if runner.claim_and_advance() is not None:
                count += 1
                continue
            wake = self.next_timer()
            if wake is None or not hasattr(self.clock, "advance"):
                break
            self.clock.advance(max(wake - self.clock.now(), 0.0))  # type: ignore[attr-defined]
        return count

    def next_timer(self) -> float | None:
        """The earliest wake time of a sleeping or waiting (with timeout) execution."""
        times = [e.wake_at for status in (SLEEPING, WAITING) for e in self.store.list(status=status)
                 if e.wake_at is not None]
        return min(times) if times else None

    def _loop(self, runner: Runner) -> None:
        while not self.stop.is_set():
            try:
                advanced = runner.claim_and_advance()
                wake = None if advanced is not None else self.next_timer()
            except Exception as exc:  # a store error: report it and keep serving, after a pause
                if self.on_event:
                    self.on_event("-", "error", f"{type(exc).__name__}: {exc}")
                advanced, wake = None, None
            if advanced is not None:
                self.advanced += 1
                continue
            delay = self.poll if wake is None else min(self.poll, max(wake - self.clock.now(), 0.0))
            self.clock.sleep(delay if delay > 0 else 0.01, self.stop)
