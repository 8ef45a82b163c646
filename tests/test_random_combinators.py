"""Random trees of runtime.gather / race over child coroutines and requests, answered in random orders.

Each tree is compiled once and driven twice by the same seeded driver, which answers one random pending part
at a time (a value, or now and then an exception): once live, once with the program snapshotted and restored
at every composite request. The parts pending at each step, what the program logged (children cancelled,
exceptions caught) and how it ended must be the same: the combinator's state travels whole. A third run
restores each snapshot in a way a crashed runner would: from the snapshot before the last answer, with that
answer given again.

``DG_RANDOM_COMBINATOR_EXAMPLES=N`` runs N examples (not derandomized) instead of the CI budget.
"""
from __future__ import annotations

import os
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from harness import load_compiled, unload
from runtime import detach, restore, snapshot
from runtime.programs.combinators import All, Delivery

CI_EXAMPLES = 25
_LOCAL = os.environ.get("DG_RANDOM_COMBINATOR_EXAMPLES")
SETTINGS = (settings(max_examples=int(_LOCAL), deadline=None) if _LOCAL else
            settings(max_examples=CI_EXAMPLES, deadline=None, derandomize=True, database=None))


class Tree:
    """Writes the source of a program: child coroutines and a main that awaits nested gather/race."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.children: list[str] = []

    def child(self) -> str:
        index = len(self.children)
        awaits = self.draw(st.integers(1, 3))
        catches = self.draw(st.booleans())
        body = [f"async def child{index}():", "    got = []", "    try:"]
        body += [f"        got.append(await sleep({i + 1}))" for i in range(awaits)]
        if catches:
            body += ["    except ValueError as exc:", f"        LOG.append(('child{index} caught', str(exc)))",
                     "        got.append('caught')"]
        body += ["    except asyncio.CancelledError:", f"        LOG.append(('child{index} cancelled', len(got)))",
                 "        raise", f"    return ['child{index}', got]"]
        self.children.append("\n".join(["@durable", *body]))
        return f"child{index}()"

    def awaitable(self, depth: int) -> str:
        kind = self.draw(st.sampled_from(["child", "sleep", "step"] + (["gather", "race"] if depth < 2 else [])))
        if kind == "child":
            return self.child()
        if kind == "sleep":
            return f"sleep({self.draw(st.integers(1, 9))})"
        if kind == "step":
            return f"step(double, {self.draw(st.integers(0, 9))})"
        parts = [self.awaitable(depth + 1) for _ in range(self.draw(st.integers(1, 3)))]
        if kind == "gather":
            flag = ", return_exceptions=True" if self.draw(st.booleans()) else ""
            return f"gather({', '.join(parts)}{flag})"
        return f"race({', '.join(parts)})"

    def source(self) -> str:
        top = self.awaitable(0)
        if not top.startswith(("gather", "race")):
            top = f"gather({top})"
        main = ["@durable", "async def main():", "    try:", f"        result = await {top}",
                "    except ValueError as exc:", "        return ['raised', str(exc), LOG]",
                "    return ['returned', result, LOG]"]
        head = ["import asyncio", "from runtime import durable, gather, race, sleep, step", "LOG = []", "",
                "def double(x):", "    return 2 * x", ""]
        return "\n\n".join(["\n".join(head), *self.children, "\n".join(main)]) + "\n"


def plain(value: Any) -> Any:
    """``value`` with exceptions as ``(type name, args)`` (exceptions compare by identity)."""
    if isinstance(value, BaseException):
        return (type(value).__name__, value.args)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def drive(module: Any, seed: int, *, round_trip: bool, replay_last: bool = False) -> list[Any]:
    """Run ``main`` answering one random pending part at a time; the trace of pending keys and the ending."""
    module.LOG.clear()
    rng = random.Random(seed)
    program = module.main()
    trace: list[Any] = []
    request = program.send(None)
    previous: tuple[bytes, Delivery, int] | None = None
    while True:
        if type(request) is not All:
            raise AssertionError(f"not a composite request: {request!r}")
        keys = [part.key for part in request.parts]
        trace.append(keys)
        key = rng.choice(keys)
        delivery = Delivery(key, error=ValueError(f"part {list(key)}")) if rng.random() < 0.2 else \
            Delivery(key, rng.randrange(100))
        if round_trip:
            data = snapshot(program)
            detach(program)
            program = restore(data)
            if replay_last and previous is not None:  # a runner that crashed after committing the last answer:
                detach(program)  # the run resumes from the snapshot before it, and that answer comes first
                saved, answer, logged = previous
                del module.LOG[logged:]  # (what ran after that snapshot runs again: its side effects once)
                program = restore(saved)
                program.send(answer)
            previous = (data, delivery, len(module.LOG))
        try:
            request = program.send(delivery)
        except StopIteration as stop:
            trace.append(("return", plain(stop.value)))
            return trace
        except Exception as exc:  # noqa: BLE001 - the program's own ending
            trace.append(("raise", type(exc).__name__, str(exc)))
            return trace


@SETTINGS
@given(st.data(), st.integers(0, 2 ** 16))
def test_random_gather_and_race_trees_travel_whole_in_any_answer_order(data: Any, seed: int) -> None:
    tree = Tree(data.draw)
    source = tree.source()
    module = load_compiled(source)
    try:
        live = drive(module, seed, round_trip=False)
        assert drive(module, seed, round_trip=True) == live, source
        assert drive(module, seed, round_trip=True, replay_last=True) == live, source
    finally:
        unload(module)
