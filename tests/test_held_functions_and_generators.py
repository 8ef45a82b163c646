"""Functions and durable generators held anywhere in a frame travel (issue 11, items 1-3): a nested
@durable function in a local or in a cell of a lambda or of a recursive closure, a durable generator in
a list, tuple, deque, attribute or map, a generator whose own closure refers to it.

Each program runs natively and compiled, with snapshot → detach → restore after every step and once in
a fresh process (``harness.differential``); the traces must be identical.
"""
from __future__ import annotations

import gc

import pytest

from harness import NEXT, differential, load_compiled, nexts, send, unload
import runtime


def test_a_nested_durable_function_held_in_a_local_travels():
    differential("""
    from runtime import durable

    def gen():
        @durable
        def counter(start):
            n = start
            while True:
                n += yield n

        make = counter
        c = make(10)
        yield next(c)
        yield c.send(5)
        fresh = make(100)
        yield next(fresh), c.send(1)
    """, nexts(4))


def test_a_nested_durable_function_in_the_cell_of_a_lambda_and_a_recursive_closure():
    differential("""
    from runtime import durable

    def gen():
        @durable
        def repeat(x, times):
            for _ in range(times):
                yield x

        twice = lambda x: list(repeat(x, 2))

        def countdown(n):          # recursive: its own cell holds it
            return [] if n == 0 else [n] + countdown(n - 1)

        yield twice("a")
        yield countdown(3)
        yield twice("b"), countdown(1)
    """, nexts(4))


def test_mutually_recursive_closures_share_their_cells():
    differential("""
    def gen():
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - 1)

        yield is_even(4)
        yield is_odd(7), is_even(3)
    """, nexts(3))


@pytest.mark.parametrize("holder", [
    "[leaf(3), leaf(5)]",
    "(leaf(3), leaf(5))",
    "collections.deque([leaf(3), leaf(5)])",
    "Box(leaf(3), leaf(5))",
    "{'a': leaf(3), 'b': leaf(5)}",
])
def test_durable_generators_held_in_containers_resume_where_they_are(holder):
    """A held generator came back as an internal PendingFrame: 'PendingFrame' object is not an iterator."""
    differential(f"""
    import collections
    from runtime import durable

    class Box:
        def __init__(self, *gens):
            self.gens = list(gens)

        def __iter__(self):
            return iter(self.gens)

    @durable
    def leaf(k):
        for i in range(k):
            yield i * k

    def gen():
        held = {holder}
        first, second = (held[k] for k in ("a", "b")) if isinstance(held, dict) else tuple(held)
        yield next(first)
        yield next(second), next(first)
        yield list(first), next(second)
    """, nexts(4))


def test_durable_generators_inside_a_map_and_a_zip():
    differential("""
    from runtime import durable

    @durable
    def leaf(k):
        for i in range(k):
            yield i + k

    def gen():
        doubled = map(lambda x: x * 2, leaf(3))
        paired = zip(leaf(2), leaf(10))
        yield next(doubled)
        yield next(paired), next(doubled)
        yield list(doubled), list(paired)
    """, nexts(4))


def test_a_held_generator_suspended_in_a_yield_from_keeps_its_chain():
    differential("""
    from runtime import durable

    @durable
    def leaf(k):
        for i in range(k):
            x = yield i
            if x:
                yield "got", x

    @durable
    def middle(k):
        result = yield from leaf(k)
        return result

    def gen():
        held = [middle(3)]
        yield next(held[0])
        yield held[0].send("hi")
        yield next(held[0]), next(held[0])
    """, nexts(4))


def test_a_generator_whose_closure_refers_to_itself():
    """It snapshotted, then restore failed with RecursionError."""
    differential("""
    from runtime import durable

    def make():
        @durable
        def worker(n):
            for i in range(n):
                got = yield i
                yield me is got      # the generator, through its own closure cell

        me = worker(3)
        return me

    def gen():
        w = make()
        yield next(w)
        yield w.send(w)
        yield next(w)
    """, nexts(4))


def test_a_generator_in_a_list_that_refers_to_itself_is_refused_clearly():
    mod = load_compiled("""
    from runtime import durable

    @durable
    def worker(box):
        yield 1
        yield box

    def gen():
        box = []
        w = worker(box)
        box.append(w)
        next(w)
        yield w
    """)
    try:
        g = mod.gen()
        w = next(g)
        with pytest.raises(runtime.UnserializableValueError, match="refers back to itself"):
            runtime.snapshot(w)
        runtime.detach(g)
    finally:
        unload(mod)


def test_a_send_through_a_restored_held_generator_reaches_it():
    differential("""
    from runtime import durable

    @durable
    def accumulate():
        total = 0
        while True:
            total += yield total

    def gen():
        acc = [accumulate()]
        next(acc[0])
        got = yield acc[0].send(1)
        yield acc[0].send(got or 0)
    """, [NEXT, send(5), NEXT])


def test_detach_also_detaches_durable_generators_held_in_values():
    """The held generators a snapshot captured continue elsewhere with it: detaching the holder runs
    none of their clean-up, wherever they are held (a list, an attribute), also when the collector frees
    them later, and the restored copies still run theirs."""
    mod = load_compiled("""
    from runtime import durable

    LOG = []

    @durable
    def worker(name):
        try:
            yield name
            yield name + "!"
        finally:
            LOG.append("cleanup " + name)

    class Holder:
        pass

    def gen():
        pool = [worker("a")]
        pool.append(pool)          # in reference cycles: freed by the collector after the detach
        holder = Holder()
        holder.job, holder.me = worker("b"), holder
        next(pool[0]), next(holder.job)
        yield "started"
        yield next(pool[0]), next(holder.job)
    """)
    try:
        g = mod.gen()
        assert next(g) == "started"
        data = runtime.snapshot(g)
        runtime.detach(g)
        del g
        gc.collect()
        assert mod.LOG == []  # natively nothing closed them: they continue in the snapshot
        back = runtime.restore(data)
        assert next(back) == ("a!", "b!")
        back.close()
        del back
        gc.collect()
        assert sorted(mod.LOG) == ["cleanup a", "cleanup b"]
    finally:
        unload(mod)


def test_nested_durable_functions_redefined_under_one_name_each_restore_as_themselves():
    """Two nested functions with the same qualified name (redefined in one function) are two durable
    functions: a snapshot of either restores with its own code, here and in a fresh process."""
    differential("""
    def gen():
        def one():
            yield "first"
            yield "first again"
        a = one()
        def one():
            yield "second"
            yield "second again"
        b = one()
        yield next(a), next(b)
        yield next(a), next(b)
    """, nexts(3))


def test_a_finished_durable_generator_held_in_a_local_survives_two_restores():
    differential("""
    def leaf():
        yield 1

    def gen():
        done = leaf()
        yield list(done)
        yield next(done, "empty")
        yield list(done), done.gi_frame is None
    """, nexts(4))


def test_a_local_holding_the_generator_it_delegates_to_is_that_generator_after_a_restore():
    """``g = child(); yield from g; use(g)``: restore gives the local and the ``yield from`` one generator
    (the local used to get a second copy that never ran), also when the chain recurses into one function."""
    differential("""
    from runtime import durable

    @durable
    def child(n):
        x = yield n
        y = yield n + 1
        return (x, y)

    @durable
    def rec(depth):
        if depth == 0:
            got = yield "leaf"
            return got
        inner = rec(depth - 1)
        result = yield from inner
        return result, inner.gi_frame is None, depth

    def gen():
        g = child(1)
        other = child(10)  # a held generator too: restored while the chain's frames are made
        yield next(other)
        r = yield from g
        yield r, g.gi_frame is None, other.send("o")
        h = child(5)
        yield next(h)
        yield (yield from h), h.gi_frame is None
        yield (yield from rec(2))
    """, [NEXT, NEXT, send("a"), send("b"), NEXT, NEXT, send("c"), send("d"), NEXT, send("e")])


def test_a_local_holding_the_coroutine_it_awaits_is_that_coroutine_after_a_restore():
    differential("""
    from runtime import durable
    from runtime.programs.requests import suspend

    @durable
    async def child(n):
        x = await suspend(n)
        return x * 2

    @durable
    async def main():
        c = child(3)
        r = await c
        try:
            await c
        except RuntimeError as exc:
            reused = str(exc)
        return r, c.cr_frame is None, reused
    """, [NEXT, send(4)], entry="main()")


def test_a_generator_in_a_container_it_is_delegated_to_from_is_refused_with_a_message():
    module = load_compiled("""
    from runtime import durable

    @durable
    def child():
        x = yield 1
        return x

    @durable
    def holds_it_in_a_list():
        gens = [child()]
        result = yield from gens[0]
        return result, gens[0].gi_frame is None
    """)
    try:
        refused = module.holds_it_in_a_list()
        next(refused)
        with pytest.raises(runtime.UnserializableValueError, match="cannot snapshot local 'gens'.* is also a frame "
                                                                   "of the chain being saved .*yield from"):
            runtime.snapshot(refused)
        with pytest.raises(StopIteration) as end:
            refused.send("a")
        assert end.value.value == ("a", True)
    finally:
        unload(module)
