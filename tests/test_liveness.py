"""Liveness of locals at suspensions (docs/design.md, "liveness"): what a snapshot must carry.

A comprehension, a generator expression or a lambda is a scope of its own: its targets and
parameters are not reads of the function's locals of the same name. Only a comprehension's outermost
iterable is evaluated in the function, and a walrus inside a comprehension binds in the function
(PEP 572). Each program holds a value a snapshot cannot carry (a ``threading.Lock``) in a local whose
name a later comprehension reuses: the differential run snapshots at every step, so a dead local
wrongly kept live fails it. The live sets are also checked in the compiled state table.
"""
from __future__ import annotations

import textwrap

from harness import NEXT, differential, load_compiled, send

from transpiler.liveness import analyze

COMPREHENSION_REUSES_NAME = """
import threading
LOG = []

def gen():
    fh = threading.Lock()
    LOG.append(fh.locked())
    got = yield "opened"  # Y1
    LOG.append(got)
    squares = [fh * fh for fh in range(got)]
    pairs = {fh: [fh for _ in range(2)] for fh in range(2)}
    keyed = sorted(squares, key=lambda fh: -fh)
    return squares, pairs, keyed
"""

GENERATOR_EXPRESSION_TARGETS = """
import threading
LOG = []

def gen(items):
    qty = threading.Lock()
    price = threading.Lock()
    LOG.append((qty.locked(), price.locked()))
    factor = yield "ready"  # Y1
    total = sum(qty * price * factor for _, qty, price in items)
    more = yield total  # Y2
    return total + sum(price for price in more)
"""

WALRUS_AND_OUTER_ITERABLE = """
import threading
LOG = []

def gen(data):
    last = threading.Lock()
    LOG.append(last.locked())
    doubled = [last := v * 2 for v in data]
    items = yield doubled  # Y1
    LOG.append(last)
    yield "next"  # Y2
    copied = [items for items in items]
    return last, copied, [last for last in range(2)]
"""


def live_at(module, source: str, marker: str) -> set[str]:
    """The locals the compiled state table keeps at the suspension on the line marked ``# marker``."""
    [line] = [n for n, text in enumerate(textwrap.dedent(source).splitlines(), 1) if text.endswith(f"# {marker}")]
    meta = module.gen.__durable__
    [state] = [k for k, at in meta.lines.items() if at == line]
    return set(meta.states[state])


def test_a_comprehension_target_is_not_a_read_of_the_local_it_shadows():
    differential(COMPREHENSION_REUSES_NAME, [NEXT, send(3)])
    module = load_compiled(COMPREHENSION_REUSES_NAME)
    assert live_at(module, COMPREHENSION_REUSES_NAME, "Y1") == set()


def test_generator_expression_targets_are_not_kept_live():
    differential(GENERATOR_EXPRESSION_TARGETS, [NEXT, send(2), send([1, 2])],
                 entry="gen([('a', 1, 2), ('b', 3, 4)])")
    module = load_compiled(GENERATOR_EXPRESSION_TARGETS)
    assert live_at(module, GENERATOR_EXPRESSION_TARGETS, "Y1") == {"items"}
    assert live_at(module, GENERATOR_EXPRESSION_TARGETS, "Y2") == {"total"}


def test_a_walrus_in_a_comprehension_binds_the_local_and_the_outer_iterable_reads_it():
    differential(WALRUS_AND_OUTER_ITERABLE, [NEXT, send([4, 5]), NEXT], entry="gen([1, 2])")
    module = load_compiled(WALRUS_AND_OUTER_ITERABLE)
    # ``last`` is bound by a comprehension's walrus: a closure variable, carried by its cell
    assert live_at(module, WALRUS_AND_OUTER_ITERABLE, "Y1") == set()
    assert live_at(module, WALRUS_AND_OUTER_ITERABLE, "Y2") == {"items"}


def test_the_analysis_keeps_a_local_a_comprehension_walrus_may_leave_unchanged():
    _, _, live = analyze(textwrap.dedent("""
        def gen(data):
            last = None
            _dg_s = 1; yield
            found = [last := v for v in data]
            _dg_s = 2; yield
            return last, found, sorted(found, key=lambda found: -found)
    """))
    assert live == {1: {"data", "last"}, 2: {"last", "found"}}
