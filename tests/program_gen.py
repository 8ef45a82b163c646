"""A random generator-function builder for differential fuzzing (see test_random_programs.py).

:class:`ProgramBuilder` writes the source of a module defining ``LOG``, an exception class ``Oops``,
a logging helper ``f``, a context manager ``CM``, a helper generator ``sub(a, b=2)`` and the
generator under test ``gen(a, b=2)``.  Every choice goes through a :class:`Chooser`, so the same
builder is driven by Hypothesis (``data.draw`` -> shrinkable programs) or by a seeded
``random.Random`` (for coverage statistics).  Choices are ordered simplest-first so Hypothesis
shrinks towards ``pass`` / literals / fewer statements.

Async mode (``async_=True``, see test_random_async_programs.py): the same choices write ``async def``
``sub`` and ``main`` (the entry) instead; each suspension is ``await suspend(v)`` (``await echo(v)``
when ``v`` suspends itself: see :meth:`ProgramBuilder.susp`), ``yield from sub(...)`` is
``await sub(...)``, ``yield from <iterable>`` is ``await each(<iterable>)``, ``for`` over ``sub`` is
``async for`` over the async iterator ``Ticker``; extra choices (made only in async mode, so the
generator mode's output for a seed is unchanged) add ``async with ACM(...)``, list/dict
comprehensions that await or ``async for``, and ``h = sub(...)`` ... ``await h``.  ASYNC_PRELUDE
defines the helpers.

Invariants that keep every program valid, terminating and deterministic:

* loops are bounded: ``for`` runs over small finite iterables (never over a list the body can
  grow), ``while`` loops test a private counter that is incremented as their first statement;
  ``break``/``continue`` appear only inside loops; nothing recurses;
* no sets, ids, hashes or addresses reach a value;
* values stay small and snapshot-able: ``str`` values are truncated when stored or ``repr``-ed,
  containers are built only from "atoms" (ints, strs, None, sent values) so nothing can nest or
  double its size exponentially, and a yield never sits in the arguments of a callee a snapshot
  cannot carry (bound methods such as ``LOG.append`` and builtin classes such as ``str`` or
  ``ValueError``); builtin functions (``len``, ``repr``, ``isinstance``), ``f``, ``CM``, ``Oops``
  and ``sub`` are fine callees.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Callable, Sequence

# Construct kinds a healthy builder must produce (checked by the coverage test).
REQUIRED_KINDS = frozenset({
    # statements
    "assign", "augassign", "assign_yield", "yield_stmt", "bare_yield", "aug_yield",
    "yield_from_iterable", "yield_from_sub", "assign_yield_from", "call_stmt", "log", "list_append",
    "slice_assign", "del", "unpack", "star_call", "keyword_call", "return_value", "return_bare",
    "raise", "raise_oops", "raise_from",
    "bare_raise", "pass",
    # control flow
    "if", "elif", "else", "for", "for_else", "while", "while_true", "while_else", "break",
    "continue", "try_except", "except_as", "except_tuple", "try_else", "try_finally",
    "try_except_finally", "with", "with_as", "with_suppress", "with_two_items",
    # iterables
    "iter_range", "iter_list", "iter_str", "iter_enumerate", "iter_zip", "iter_reversed",
    "iter_dict_items", "iter_list_copy", "iter_sub",
    # yields inside larger expressions
    "yield_in_call", "yield_in_builtin_call", "yield_in_binop", "yield_in_compare",
    "yield_in_chained_compare", "yield_in_boolop", "yield_in_ifexp", "yield_in_list",
    "yield_in_tuple", "yield_in_dict", "yield_in_fstring", "yield_in_subscript", "yield_nested",
    "yield_from_expr", "yield_in_walrus", "yield_in_if_test", "yield_in_while_test",
    "yield_in_for_iter", "yield_in_with_header", "yield_in_return", "yield_in_raise",
    # placements of suspensions
    "yield_in_loop", "yield_in_try", "yield_in_except", "yield_in_else", "yield_in_finally",
    "yield_in_with", "yield_in_sub",
})

# ... and in async mode (``ProgramBuilder(..., async_=True)``), where a "yield" kind names the
# ``await suspend(...)`` standing for that yield and "yield_from_sub" an ``await sub(...)``.
ASYNC_REQUIRED_KINDS = (REQUIRED_KINDS - {"iter_sub", "del"}) | frozenset({
    "await_echo", "iter_ticker", "async_for", "async_for_else", "async_for_raises", "yield_in_anext",
    "async_with", "yield_in_aenter_aexit", "comprehension", "async_comprehension",
    "async_for_in_comprehension", "yield_in_comprehension", "dict_comprehension", "await_held",
    "await_held_later", "match", "match_wildcard", "yield_in_match", "yield_in_match_subject",
    "yield_in_match_guard",
})

INT_VARS = ("n", "m", "b")
STR_VARS = ("s", "t")
ANY_VARS = ("x", "y", "a")
DELETABLE = ("n", "m", "s", "t", "x", "y")
STR_LITS = ("''", "'a'", "'bc'", "'xyz'")
EXC_TYPES = ("ValueError", "KeyError", "Exception", "(ValueError, KeyError)", "Oops",
             "ArithmeticError")

PRELUDE = '''\
LOG = []


class Oops(Exception):
    pass


def f(*args, **kw):
    LOG.append(("f",) + args + tuple(kw.items()))
    if "xyz" in args:
        raise KeyError("f")
    return len(args) + len(kw)


class CM:
    def __init__(self, tag, suppress=False):
        self.tag = tag
        self.suppress = suppress

    def __enter__(self):
        LOG.append(("enter", self.tag))
        if self.tag == "xyz":
            raise Oops("enter")
        return self.tag

    def __exit__(self, et, ev, tb):
        LOG.append(("exit", self.tag, None if et is None else et.__name__))
        if self.tag == 3:
            raise KeyError("exit")
        return self.suppress
'''

# EXCLUDED from generation, compiler/runtime bugs found by test_random_async_programs.py (remove
# the exclusion once fixed):
# * AITER_OF_BUG: an await in the iterable of an ``async for`` (statement or comprehension),
#   ``async for i in Ticker(await suspend(2)): ...`` or ``[q async for q in Ticker(await suspend(2))]``:
#   the compiled code evaluates ``_dg_rt.aiter_of`` into a temporary before that await and keeps it
#   across the suspension, so every snapshot there fails (UnserializableValueError: "cannot snapshot
#   the value of `....aiter_of`, evaluated before the await"); natively fine.
# * HELD_LOCAL_BUG: a coroutine in a local while it is awaited (``h = sub(); x = await h``, ``h`` not
#   used after): a restored frame no longer holds it in ``h`` (the runtime drops the alias), so when
#   close() leaves it suspended ("coroutine ignored GeneratorExit": a suspension in a ``finally`` or
#   an ``__aexit__``) and the caller catches that RuntimeError, the compiled side finalizes it at
#   once (its ``__aexit__``s/``finally``s run) while natively ``h`` keeps it alive.  Generated as
#   ``h = [sub()]`` ... ``await h.pop()`` instead.
# * CELL_DEL_BUG (generators too): after a restore, reading a deleted local that a nested scope
#   captures (a comprehension, a lambda) raises NameError("cannot access free variable 'y' where it
#   is not associated with a value in enclosing scope") instead of UnboundLocalError("cannot access
#   local variable 'y' ..."): the restored frame runs the "cellular variant", where the captured
#   locals are free variables.
# * UNBOUND_OPERAND_BUG (coroutines only, no snapshot needed): an unbound plain local read as an
#   operand before an await, ``t = 1; del t; f(t, await suspend(1))`` (or ``return t + await
#   suspend(1)`` with ``t`` never bound, or an ``except ... as e`` name after its handler): natively
#   the read raises UnboundLocalError before the await; compiled, the await suspends first and the
#   UnboundLocalError comes at the next step (operands that read plain locals are no longer copied
#   before an await, so the read moved after it).
#   Async mode therefore writes no ``del`` (the generator mode keeps it: no nested scopes there, and
#   generators keep copying operands).

# Async mode (``ProgramBuilder(..., async_=True)``): appended to PRELUDE.  ``Ticker`` is an async
# iterator and ``ACM`` an async context manager whose methods may suspend; ``each`` is a helper
# coroutine that suspends once per item (it stands where ``yield from <iterable>`` stands), ``echo``
# one that suspends once (it stands for ``await suspend(v)`` when ``v`` itself suspends).
ASYNC_PRELUDE = '''

from runtime.programs.requests import suspend


class Ticker:
    def __init__(self, n, pause=False, fail=None):
        self.i, self.n, self.pause, self.fail = 0, n, pause, fail

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.pause:
            await suspend(("tick", self.i))
        if self.i == self.fail:
            raise KeyError("tick")
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        LOG.append(("tick", self.i))
        return self.i


class ACM:
    def __init__(self, tag, suppress=False, pause=False):
        self.tag, self.suppress, self.pause = tag, suppress, pause

    async def __aenter__(self):
        LOG.append(("aenter", self.tag))
        if self.pause:
            await suspend(("aenter", self.tag))
        if self.tag == "xyz":
            raise Oops("aenter")
        return self.tag

    async def __aexit__(self, et, ev, tb):
        LOG.append(("aexit", self.tag, None if et is None else et.__name__))
        if self.pause:
            await suspend(("aexit", self.tag))
        if self.tag == 3:
            raise KeyError("aexit")
        return self.suppress


async def echo(v=None):
    return await suspend(v)


async def each(items):
    r = None
    for v in items:
        r = await suspend(v)
    return r
'''



def async_prelude(body: str) -> str:
    """PRELUDE and the parts of ASYNC_PRELUDE that ``body`` uses (compiling the async helpers costs
    more than most programs: leaving out the unused ones keeps the test fast)."""
    parts = ASYNC_PRELUDE.split("\n\n\n")
    kept = [part for part in parts[1:]
            if re.search(r"\b" + re.search(r"(?:class|def) (\w+)", part).group(1) + r"\(", body)]
    return "\n\n\n".join([PRELUDE + parts[0]] + kept)


INIT = ("n = 0", "m = 1", "s = 's'", "t = ''", "x = None", "y = 0", "L = []")


# ----------------------------------------------------------------------------------- choosers

class Chooser:
    """Source of choices. ``integer`` must shrink towards ``lo``."""

    def integer(self, lo: int, hi: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def chance(self, percent: int) -> bool:
        """True with probability ``percent``%; shrinks towards False."""
        return self.integer(0, 99) >= 100 - percent

    def weighted(self, options: Sequence[tuple[int, str]]) -> str:
        """Pick a label by weight; shrinks towards the first option with a non-zero weight."""
        opts = [(w, v) for w, v in options if w > 0]
        k = self.integer(0, sum(w for w, _ in opts) - 1)
        for w, v in opts:
            if k < w:
                return v
            k -= w
        raise AssertionError("unreachable")

    def pick(self, values: Sequence):
        return values[self.integer(0, len(values) - 1)]


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class DrawChooser(Chooser):
    """Drives the builder from Hypothesis (``draw`` of an ``st.composite`` or ``st.data()``)."""

    def __init__(self, draw: Callable) -> None:
        from hypothesis import strategies as st
        self._draw = draw
        self._st = st

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(self._st.integers(lo, hi))


# ----------------------------------------------------------------------------------- the builder

@dataclasses.dataclass(frozen=True)
class Scope:
    loop: bool = False           # break/continue allowed
    handler: bool = False        # bare raise allowed
    exc_var: str | None = None   # innermost bound except-as name
    extra: tuple[str, ...] = ()  # readable loop/with/except names
    place: str = "body"          # body/loop/try/except/else/finally/with: where a yield here sits


@dataclasses.dataclass
class Program:
    source: str
    entry: str
    kinds: frozenset

    def __repr__(self) -> str:  # printed by Hypothesis for a falsifying example
        return f"Program(entry={self.entry!r}, source=\n{self.source}\n)"


E = tuple  # (text, has_yield)


class ProgramBuilder:
    def __init__(self, chooser: Chooser, *, max_depth: int = 3, max_stmts: int = 5,
                 async_: bool = False) -> None:
        self.ch = chooser
        self.max_depth = max_depth
        self.max_stmts = max_stmts
        self.async_ = async_       # write ``async def`` programs (see the module docstring)
        self.kinds: set[str] = set()
        self.names = 0
        self.in_sub = False
        self.fn_yields = 0
        self.in_comp = False       # inside a comprehension: no nested comprehension
        self.no_walrus = False     # in a comprehension's iterable: ``:=`` is a SyntaxError there
        self.async_iter = False    # set by iterable(): the loop is an ``async for``

    # ------------------------------------------------------------------ helpers
    def fresh(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def mark(self, kind: str) -> None:
        self.kinds.add(kind)

    def susp(self, value: str | None = None, nested: bool = False) -> str:
        """A suspension sending ``value`` out (unparenthesised): ``yield v`` or ``await suspend(v)``.

        ``nested``: ``value`` itself suspends.  Async mode then awaits the module's helper coroutine
        ``echo(v)`` instead: ``suspend`` (a function of the runtime, not of a compiled module) cannot
        be snapshotted as a callee live across the inner await (UnserializableValueError: "cannot
        snapshot the value of `suspend`, evaluated before the await")."""
        if self.async_:
            if nested:
                self.mark("await_echo")
                return f"await echo({value})"
            return f"await suspend({'' if value is None else value})"
        return "yield" if value is None else f"yield {value}"

    def delegate(self, src: str) -> str:
        """A delegation to the helper ``sub(...)`` (unparenthesised): ``yield from`` or ``await``."""
        return f"await {src}" if self.async_ else f"yield from {src}"

    def _yield_node(self, d: int, y: bool, fs: bool = False) -> E:
        self.fn_yields += 1
        if self.ch.chance(8):
            return f"({self.susp()})", True
        v, vy = self.any(d - 1, y, fs)
        if vy:
            self.mark("yield_nested")
        return f"({self.susp(v, vy)})", True

    # ------------------------------------------------------------------ expressions
    # Each returns (text, contains_yield); ``y`` says whether a yield may appear; ``fs`` that we are
    # inside an f-string replacement field (no string literals / nested f-strings there).

    def int_(self, d: int, y: bool, fs: bool = False) -> E:
        yw = 3 if y else 0
        kind = self.ch.weighted([
            (4, "lit"), (4, "var"), (0 if d <= 0 else 3, "add"), (0 if d <= 0 else 2, "sub"),
            (0 if d <= 0 else 2, "len_s"), (1, "len_L"), (0 if d <= 0 else 1, "len_repr"),
            (0 if d <= 0 else 1, "ifexp"), (0 if d <= 0 else 2, "call"),
            (0 if d <= 0 else 1, "tuple_sub"), (0 if d <= 0 else yw, "yield_len"),
            (0 if d <= 0 or not y else 1, "yield_add"), (0 if d <= 0 else 1, "compare"),
        ])
        if kind == "lit":
            return str(self.ch.integer(-1, 4)), False
        if kind == "var":
            return self.ch.pick(INT_VARS), False
        if kind == "add":
            (l, ly), (r, ry) = self.int_(d - 1, y, fs), self.int_(d - 1, y, fs)
            if ly or ry:
                self.mark("yield_in_binop")
            return f"({l} + {r})", ly or ry
        if kind == "sub":
            l, ly = self.int_(d - 1, y, fs)
            if ly:
                self.mark("yield_in_binop")
            return f"({l} - {self.ch.integer(1, 3)})", ly
        if kind == "len_s":
            v, vy = self.str_(d - 1, y, fs)
            if vy:
                self.mark("yield_in_builtin_call")
            return f"len({v})", vy
        if kind == "len_L":
            return "len(L)", False
        if kind == "len_repr":
            v, vy = self.any(d - 1, y, fs)
            if vy:
                self.mark("yield_in_builtin_call")
            return f"len(repr({v}))", vy
        if kind == "ifexp":
            return self.ifexp(self.int_, d, y, fs)
        if kind == "call":
            return self.call_f(d, y, fs)
        if kind == "tuple_sub":
            (l, ly), (r, ry) = self.int_(d - 1, y, fs), self.int_(d - 1, y, fs)
            i, iy = self.int_(d - 1, y, fs)
            if ly or ry or iy:
                self.mark("yield_in_subscript")
            return f"({l}, {r})[{i} % 2]", ly or ry or iy
        if kind == "yield_len":
            v, _ = self._yield_node(d, y, fs)
            self.mark("yield_in_builtin_call")
            return f"len(repr({v}))", True
        if kind == "yield_add":
            l, _ = self.int_(d - 1, y, fs)
            v, _ = self._yield_node(d, y, fs)
            self.mark("yield_in_binop")
            if self.ch.chance(70):  # a sent None would make most programs die on a TypeError
                v = f"({v} or {self.ch.integer(0, 2)})"
            return f"({l} + {v})", True
        if kind == "compare":
            return self.cond(d - 1, y, fs, only_compare=True)
        raise AssertionError(kind)

    def str_(self, d: int, y: bool, fs: bool = False) -> E:
        yw = 3 if y else 0
        kind = self.ch.weighted([
            (0 if fs else 4, "lit"), (4, "var"), (0 if d <= 0 else 2, "concat"),
            (0 if d <= 0 or fs else 2, "fstring"), (0 if d <= 0 else 2, "repr"),
            (0 if d <= 0 else 1, "slice"), (0 if d <= 0 else 1, "ifexp"),
            (0 if d <= 0 else yw, "yield_repr"),
        ])
        if kind == "lit":
            return self.ch.pick(STR_LITS), False
        if kind == "var":
            return self.ch.pick(STR_VARS), False
        if kind == "concat":
            (l, ly), (r, ry) = self.str_(d - 1, y, fs), self.str_(d - 1, y, fs)
            if ly or ry:
                self.mark("yield_in_binop")
            return f"({l} + {r})", ly or ry
        if kind == "fstring":
            parts, hy = [], False
            for _ in range(self.ch.integer(1, 2)):
                which = self.ch.weighted([(2, "int"), (2, "str"), (2 if y else 0, "yield")])
                if which == "int":
                    v, vy = self.int_(d - 1, y, True)
                elif which == "str":
                    v, vy = self.str_(d - 1, y, True)
                else:
                    v, vy = self._yield_node(d, y, True)
                conv = "!r" if self.ch.chance(30) else ""
                parts.append(f"{{ {v} {conv}}}-" if conv else f"{{ {v} }}-")
                hy = hy or vy
            if hy:
                self.mark("yield_in_fstring")
            return 'f"' + "".join(parts) + '"', hy
        if kind == "repr":
            v, vy = self.any(d - 1, y, fs)
            if vy:
                self.mark("yield_in_builtin_call")
            return f"repr({v})[:8]", vy
        if kind == "slice":
            v, vy = self.str_(d - 1, y, fs)
            if vy:
                self.mark("yield_in_subscript")
            return f"{v}[{self.ch.integer(0, 2)}:]", vy
        if kind == "ifexp":
            return self.ifexp(self.str_, d, y, fs)
        if kind == "yield_repr":
            v, _ = self._yield_node(d, y, fs)
            self.mark("yield_in_builtin_call")
            return f"repr({v})[:8]", True
        raise AssertionError(kind)

    def atom(self, d: int, y: bool, fs: bool = False) -> E:
        """An int, a str, None or a sent value (never a container)."""
        yw = 4 if y else 0
        kind = self.ch.weighted([
            (3, "int"), (3, "str"), (1, "none"), (0 if d <= 0 else yw, "yield"),
            (0 if d <= 0 else 1, "boolop"), (0 if d <= 0 else 1, "ifexp"),
        ])
        if kind == "int":
            return self.int_(d, y, fs)
        if kind == "str":
            return self.str_(d, y, fs)
        if kind == "none":
            return "None", False
        if kind == "yield":
            return self._yield_node(d, y, fs)
        if kind == "boolop":
            (l, ly), (r, ry) = self.atom(d - 1, y, fs), self.atom(d - 1, y, fs)
            if ly or ry:
                self.mark("yield_in_boolop")
            return f"({l} {self.ch.pick(('and', 'or'))} {r})", ly or ry
        if kind == "ifexp":
            return self.ifexp(self.atom, d, y, fs)
        raise AssertionError(kind)

    def any(self, d: int, y: bool, fs: bool = False, scope: Scope | None = None) -> E:
        yw = 2 if y else 0
        kind = self.ch.weighted([
            (4, "atom"), (3, "var"), (1, "L"), (0 if d <= 0 else 1, "list"),
            (0 if d <= 0 else 1, "tuple"), (0 if d <= 0 else 1, "dict"),
            (0 if d <= 0 or self.in_sub else yw, "yield_from"),
            (1 if self.async_ and d > 0 and not fs and not self.in_comp else 0, "comprehension"),
        ])
        if kind == "atom":
            return self.atom(d, y, fs)
        if kind == "var":
            names = ANY_VARS + (scope.extra if scope else ())
            return self.ch.pick(names), False
        if kind == "L":
            return "L", False
        if kind in ("list", "tuple"):
            items = [self.atom(d - 1, y, fs) for _ in range(self.ch.integer(1, 3))]
            hy = any(i[1] for i in items)
            if hy:
                self.mark(f"yield_in_{kind}")
            body = ", ".join(i[0] for i in items)
            return (f"[{body}]" if kind == "list" else f"({body},)"), hy
        if kind == "dict":
            items, hy = [], False
            for key in ("'p'", "'q'")[: self.ch.integer(1, 2)]:
                if not fs and self.ch.chance(30):
                    key, ky = self.str_(d - 1, y)
                    hy = hy or ky
                v, vy = self.atom(d - 1, y, fs)
                hy = hy or vy
                items.append(f"{key}: {v}")
            if hy:
                self.mark("yield_in_dict")
            return "{" + ", ".join(items) + "}", hy
        if kind == "yield_from":
            # a delegation used as an expression: its value is sub's return value
            self.fn_yields += 1
            arg, _ = self.atom(d - 1, y, fs)
            self.mark("yield_from_expr")
            return f"({self.delegate(f'sub({arg})')})", True
        if kind == "comprehension":
            return self.comprehension(d, y)
        raise AssertionError(kind)

    def comprehension(self, d: int, y: bool) -> E:
        """(async mode) A list or dict comprehension over ``range`` or a ``Ticker`` whose element may
        suspend: an async comprehension when it has an ``await`` or an ``async for``."""
        i = self.fresh("q")
        over_ticker = y and self.ch.chance(50)
        self.no_walrus = True  # ``:=`` in a comprehension's iterable is a SyntaxError
        # no await in the iterable of an ``async for``: AITER_OF_BUG
        n, ny = self.int_(d - 1, y and not over_ticker)
        self.no_walrus = False
        if over_ticker:
            self.fn_yields += 1
            pause = self.ch.chance(40)
            if pause:
                self.mark("yield_in_anext")
            src = f"Ticker({n} % 4{', True' if pause else ''})"
        else:
            src = f"range({n} % 4)"
        self.in_comp = True
        elem = self.ch.weighted([(2, "var"), (3 if y else 0, "await"), (3, "atom")])
        if elem == "var":
            e, ey = i, False
        elif elem == "await":
            self.fn_yields += 1
            e, ey = f"({self.susp(i)})", True
        else:
            e, ey = self.atom(d - 1, y)
        cond = f" if {i} != {self.ch.integer(0, 2)}" if self.ch.chance(25) else ""
        self.in_comp = False
        hy = ey or ny or over_ticker
        self.mark("async_comprehension" if ey or over_ticker else "comprehension")
        if over_ticker:
            self.mark("async_for_in_comprehension")
        if ey:
            self.mark("yield_in_comprehension")
        loop = f"{'async ' if over_ticker else ''}for {i} in {src}{cond}"
        if self.ch.chance(25):
            self.mark("dict_comprehension")
            return f"{{{i}: {e} {loop}}}", hy
        return f"[{e} {loop}]", hy

    def ifexp(self, sub: Callable, d: int, y: bool, fs: bool) -> E:
        (a, ay), (c, cy), (b, by) = sub(d - 1, y, fs), self.cond(d - 1, y, fs), sub(d - 1, y, fs)
        if ay or cy or by:
            self.mark("yield_in_ifexp")
        return f"({a} if {c} else {b})", ay or cy or by

    def call_f(self, d: int, y: bool, fs: bool = False, scope: Scope | None = None) -> E:
        args = [self.any(d - 1, y, fs, scope) for _ in range(self.ch.integer(0, 3))]
        hy = any(a[1] for a in args)
        texts = [a[0] for a in args]
        if self.ch.chance(15):  # a starred argument (L holds only atoms)
            self.mark("star_call")
            star = "*L"
            if self.ch.chance(50):
                v, vy = self.atom(d - 1, y, fs)
                star, hy = f"*[{v}]", hy or vy
            texts.insert(self.ch.integer(0, len(texts)), star)
        for name in ("k", "z")[: self.ch.integer(0, 2) if self.ch.chance(25) else 0]:
            self.mark("keyword_call")
            v, vy = self.atom(d - 1, y, fs)
            hy = hy or vy
            texts.append(f"{name}={v}" if name == "k" or fs else f"**{{'{name}': {v}}}")
        if hy:
            self.mark("yield_in_call")
        return f"f({', '.join(texts)})", hy

    def cond(self, d: int, y: bool, fs: bool = False, scope: Scope | None = None,
             only_compare: bool = False) -> E:
        d = max(d, 0)
        kind = self.ch.weighted([
            (3, "lt"), (2, "eq"), (0 if only_compare else 2, "truthy"),
            (0 if only_compare else 1, "not"), (0 if only_compare else 1, "isinstance"),
            (2, "in"), (0 if only_compare or d <= 0 else 1, "boolop"), (1, "chain"),
            (0 if only_compare or d <= 0 or fs or self.no_walrus else 1, "walrus"),
        ])
        if kind == "lt":
            (l, ly), (r, ry) = self.int_(d, y, fs), self.int_(d, y, fs)
            res = (f"({l} {self.ch.pick(('<', '<=', '>', '!='))} {r})", ly or ry)
        elif kind == "eq":
            (l, ly), (r, ry) = self.any(d, y, fs, scope), self.atom(d, y, fs)
            res = (f"({l} == {r})", ly or ry)
        elif kind == "in":
            l, ly = self.atom(d, y, fs)
            res = (f"({l} in (1, 2, {self.ch.pick(('None', 'a', 'x', 'n'))}))", ly)
        elif kind == "chain":
            (l, ly), (mid, my), (r, ry) = (self.int_(d, y, fs), self.int_(d, y, fs),
                                           self.int_(d, y, fs))
            if my:
                self.mark("yield_in_chained_compare")
            res = (f"({l} < {mid} <= {r})", ly or my or ry)
        elif kind == "truthy":
            return self.any(d, y, fs, scope)
        elif kind == "not":
            v, vy = self.any(d, y, fs, scope)
            return f"(not {v})", vy
        elif kind == "isinstance":
            v, vy = self.any(d, y, fs, scope)
            if vy:
                self.mark("yield_in_builtin_call")
            return f"isinstance({v}, {self.ch.pick(('int', 'str', 'list'))})", vy
        elif kind == "boolop":
            (l, ly), (r, ry) = self.cond(d - 1, y, fs, scope), self.cond(d - 1, y, fs, scope)
            if ly or ry:
                self.mark("yield_in_boolop")
            return f"({l} {self.ch.pick(('and', 'or'))} {r})", ly or ry
        elif kind == "walrus":
            v, vy = self.atom(d, y, fs)
            if vy:
                self.mark("yield_in_walrus")
            return f"((x := {v}) {self.ch.pick(('!=', '=='))} 1)", vy
        else:
            raise AssertionError(kind)
        if res[1]:
            self.mark("yield_in_compare")
        return res

    # ------------------------------------------------------------------ statements
    def block(self, scope: Scope, depth: int, lo: int = 1) -> list[str]:
        lines: list[str] = []
        for _ in range(self.ch.integer(lo, self.max_stmts if depth == 0 else 3)):
            lines += self.stmt(scope, depth)
        return lines

    def _note_yield(self, scope: Scope, had: bool) -> None:
        if had:
            self.mark(f"yield_in_{scope.place}" if scope.place != "body" else "yield_top")
            if self.in_sub:
                self.mark("yield_in_sub")

    def stmt(self, scope: Scope, depth: int) -> list[str]:
        compound = depth < self.max_depth
        cw = 3 if compound else 0
        kind = self.ch.weighted([
            (1, "pass"), (6, "assign"), (3, "augassign"), (6, "assign_yield"), (7, "yield_stmt"),
            (1, "bare_yield"), (1, "aug_yield"), (3, "yield_from"), (3, "call_stmt"),
            (2, "log"), (1, "list_append"), (1, "slice_assign"),
            (0 if self.async_ else 1, "del"),  # async mode: CELL_DEL_BUG
            (1, "unpack"),
            (1 if depth else 0, "return"), (1 if depth else 0, "raise"),
            (3 if scope.loop else 0, "break"), (3 if scope.loop else 0, "continue"),
            (3 if scope.handler else 0, "bare_raise"), (2 if scope.exc_var else 0, "raise_from"),
            (cw * 2, "if"), (cw, "for"), (cw, "while"), (cw * 2, "try"), (cw, "with"),
            (2 if self.async_ and not self.in_sub else 0, "held"),
            (cw if self.async_ else 0, "match"),
        ])
        if kind in ("pass", "assign", "augassign", "call_stmt", "log", "list_append",
                    "slice_assign", "del", "break", "continue", "bare_raise", "raise_from"):
            self.mark(kind)
        y0 = self.fn_yields
        method = getattr(self, f"s_{kind}", None)
        lines = method(scope, depth) if method else self.s_simple(kind, scope)
        if kind not in ("if", "for", "while", "try", "with", "match"):
            self._note_yield(scope, self.fn_yields > y0)
        return lines

    def s_simple(self, kind: str, scope: Scope) -> list[str]:
        d = 2
        if kind == "pass":
            return ["pass"]
        if kind == "assign":
            target = self.ch.weighted([(3, "int"), (2, "str"), (3, "any"), (1, "list")])
            if target == "int":
                v, _ = self.int_(d, True)
                return [f"{self.ch.pick(INT_VARS)} = {v}"]
            if target == "str":
                v, _ = self.str_(d, True)
                return [f"{self.ch.pick(STR_VARS)} = ({v})[:10]"]
            if target == "any":
                v, _ = self.any(d, True, scope=scope)
                return [f"{self.ch.pick(ANY_VARS[:2])} = {v}"]
            return [f"L = {self.list_(d, True)[0]}"]
        if kind == "augassign":
            target = self.ch.weighted([(3, "int"), (2, "str"), (1, "list")])
            if target == "int":
                return [f"{self.ch.pick(INT_VARS)} += {self.int_(d, True)[0]}"]
            if target == "str":
                v = self.ch.weighted([(2, "lit"), (1, "repr")])
                rhs = self.ch.pick(STR_LITS) if v == "lit" else f"repr({self.atom(1, True)[0]})[:4]"
                return [f"{self.ch.pick(STR_VARS)} += {rhs}"]
            items = ", ".join(self.atom(1, True)[0] for _ in range(self.ch.integer(1, 2)))
            return [f"L += [{items}]"]
        if kind == "assign_yield":
            target = self.ch.pick(ANY_VARS[:2])
            self.fn_yields += 1
            if self.ch.chance(15):
                self.mark("bare_yield")
                return [f"{target} = {self.susp()}"]
            self.mark("assign_yield")
            return [f"{target} = {self.susp(*self.any(d, True, scope=scope))}"]
        if kind == "unpack":
            self.mark("unpack")
            if self.ch.chance(40):
                self.fn_yields += 1
                return [f"x, y = {self.susp(*self.any(d - 1, True, scope=scope))}"]
            (l, _), (r, _) = self.atom(d - 1, True), self.atom(d - 1, True)
            return [f"x, y = {l}, {r}"]
        if kind == "yield_stmt":
            self.mark("yield_stmt")
            self.fn_yields += 1
            return [self.susp(*self.any(d, True, scope=scope))]
        if kind == "bare_yield":
            self.mark("bare_yield")
            self.fn_yields += 1
            return [self.susp()]
        if kind == "aug_yield":
            self.mark("aug_yield")
            self.fn_yields += 1
            target = self.ch.pick(("n", "s", "L", "x"))
            return [f"{target} += {self.susp(*self.any(d - 1, True, scope=scope))}"]
        if kind == "yield_from":
            self.fn_yields += 1
            what = self.ch.weighted([(2, "list"), (1, "range"), (1, "str"),
                                     (0 if self.in_sub else 4, "sub")])
            if what == "sub":
                self.mark("yield_from_sub")
                arg, _ = self.atom(1, True)
                if self.ch.chance(50):
                    self.mark("assign_yield_from")
                    return [f"{self.ch.pick(ANY_VARS[:2])} = {self.delegate(f'sub({arg})')}"]
                return [self.delegate(f"sub({arg})")]
            self.mark("yield_from_iterable")
            if what == "list":
                items = [self.atom(1, True) for _ in range(self.ch.integer(0, 3))]
                if any(i[1] for i in items):
                    self.mark("yield_in_list")
                src = "[" + ", ".join(i[0] for i in items) + "]"
            elif what == "range":
                src = f"range({self.ch.integer(0, 3)})"
            else:
                src = self.ch.pick(STR_LITS)
            target = self.ch.chance(30)
            if target:
                self.mark("assign_yield_from")
            # async mode: the helper coroutine ``each`` suspends once per item
            what = f"await each({src})" if self.async_ else f"yield from {src}"
            return [f"{'x = ' if target else ''}{what}"]
        if kind == "call_stmt":
            return [self.call_f(d, True, scope=scope)[0]]
        if kind == "log":
            return [f"LOG.append({self.any(d, False, scope=scope)[0]})"]
        if kind == "list_append":
            return [f"L.append({self.atom(d, False)[0]})"]
        if kind == "slice_assign":
            i, _ = self.int_(1, True)
            v, _ = self.atom(1, True)
            return [f"L[{i}:] = [{v}]"]
        if kind == "del":
            return [f"del {self.ch.pick(DELETABLE)}"]
        if kind == "return":
            if self.ch.chance(25):
                self.mark("return_bare")
                return ["return"]
            self.mark("return_value")
            v, vy = self.any(d, True, scope=scope)
            if vy:
                self.mark("yield_in_return")
            return [f"return {v}"]
        if kind == "raise":
            cls = self.ch.weighted([(2, "ValueError"), (1, "KeyError"), (1, "Oops")])
            # builtin exception classes cannot be live across a suspension: no yield in their args
            v, vy = self.atom(1, cls == "Oops")
            self.mark("raise_oops" if cls == "Oops" else "raise")
            if vy:
                self.mark("yield_in_raise")
            return [f"raise {cls}({v})"]
        if kind == "break":
            return ["break"]
        if kind == "continue":
            return ["continue"]
        if kind == "bare_raise":
            return ["raise"]
        if kind == "raise_from":
            return [f"raise ValueError({self.atom(1, False)[0]}) from {scope.exc_var}"]
        raise AssertionError(kind)

    def s_match(self, scope: Scope, depth: int) -> list[str]:
        """(async mode) ``match`` on a value that may suspend, with literal, class, sequence and
        mapping patterns, guards that may suspend and cases whose bodies may suspend."""
        self.mark("match")
        y0 = self.fn_yields
        subject, _ = self.any(1, True, scope=scope)
        if self.fn_yields > y0:
            self.mark("yield_in_match_subject")
            self._note_yield(scope, True)
        lines = [f"match {subject}:"]

        def case_body(inner: Scope) -> list[str]:
            return ["    " + line for line in self.indent(self.block(inner, depth + 1))]

        for _ in range(self.ch.integer(1, 3)):
            kind = self.ch.weighted([(3, "literal"), (2, "class"), (2, "sequence"), (1, "mapping")])
            names: tuple[str, ...] = ()
            if kind == "literal":
                pattern = " | ".join(self.ch.pick(("0", "1", "2", "None", "'a'", "''", "-1"))
                                     for _ in range(self.ch.integer(1, 2)))
            elif kind == "class":
                k = self.fresh("k")
                pattern, names = f"{self.ch.pick(('int', 'str', 'list', 'tuple'))}() as {k}", (k,)
            elif kind == "sequence":
                k = self.fresh("k")
                pattern, names = self.ch.pick((f"[{k}, *_]", f"({k}, _)", f"[_, {k}]")), (k,)
            else:
                k = self.fresh("k")
                pattern, names = f"{{'p': {k}}}", (k,)
            guard = ""
            if self.ch.chance(30):
                y0 = self.fn_yields
                c, _ = self.cond(1, True, scope=scope)
                if self.fn_yields > y0:
                    self.mark("yield_in_match_guard")
                    self._note_yield(scope, True)
                guard = f" if {c}"
            inner = self.sub_scope(scope, extra=scope.extra + names, place="match")
            lines += [f"    case {pattern}{guard}:"] + case_body(inner)
        if self.ch.chance(50):
            self.mark("match_wildcard")
            lines += ["    case _:"] + case_body(self.sub_scope(scope, place="match"))
        return lines

    def s_held(self, scope: Scope, depth: int) -> list[str]:
        """(async mode) ``h = [sub(...)]``, maybe a suspension, then ``x = await h.pop()``: a coroutine
        created, held (in a list: HELD_LOCAL_BUG) and awaited later."""
        self.mark("await_held")
        h = self.fresh("h")
        arg, _ = self.atom(1, True)
        lines = [f"{h} = [sub({arg})]"]
        self.fn_yields += 1
        if self.ch.chance(50):
            self.mark("await_held_later")
            lines.append(self.susp(*self.atom(1, True)))
        lines.append(f"{self.ch.pick(ANY_VARS[:2])} = await {h}.pop()")
        return lines

    def list_(self, d: int, y: bool) -> E:
        kind = self.ch.weighted([(3, "display"), (1, "tail"), (1, "append"), (1, "range")])
        if kind == "display":
            items = [self.atom(d - 1, y) for _ in range(self.ch.integer(0, 3))]
            hy = any(i[1] for i in items)
            if hy:
                self.mark("yield_in_list")
            return "[" + ", ".join(i[0] for i in items) + "]", hy
        if kind == "tail":
            return f"L[-{self.ch.integer(1, 3)}:]", False
        if kind == "append":
            v, vy = self.atom(d - 1, y)
            if vy:
                self.mark("yield_in_list")
            return f"(L + [{v}])[-5:]", vy
        return f"list(range({self.ch.integer(0, 3)}))", False

    @staticmethod
    def indent(lines: list[str]) -> list[str]:
        return ["    " + line for line in lines]

    def sub_scope(self, scope: Scope, **kw) -> Scope:
        return dataclasses.replace(scope, **kw)

    def s_if(self, scope: Scope, depth: int) -> list[str]:
        self.mark("if")
        y0 = self.fn_yields
        c, cy = self.cond(1, True, scope=scope)
        if cy:
            self.mark("yield_in_if_test")
        self._note_yield(scope, self.fn_yields > y0)
        lines = [f"if {c}:"] + self.indent(self.block(scope, depth + 1))
        for _ in range(self.ch.integer(0, 1) if self.ch.chance(40) else 0):
            self.mark("elif")
            y0 = self.fn_yields
            c, cy = self.cond(1, True, scope=scope)
            if cy:
                self.mark("yield_in_if_test")
            self._note_yield(scope, self.fn_yields > y0)
            lines += [f"elif {c}:"] + self.indent(self.block(scope, depth + 1))
        if self.ch.chance(40):
            self.mark("else")
            lines += ["else:"] + self.indent(self.block(scope, depth + 1))
        return lines

    def iterable(self, scope: Scope) -> tuple[str, str, tuple[str, ...]]:
        """(target, iterable source, names bound by the target)."""
        i = self.fresh("i")
        kind = self.ch.weighted([(3, "range"), (2, "list"), (1, "str"), (1, "enumerate"),
                                 (1, "zip"), (1, "reversed"), (1, "dict_items"), (1, "list_copy"),
                                 (0 if self.in_sub or self.async_ else 2, "sub"),
                                 (3 if self.async_ else 0, "ticker")])
        self.mark(f"iter_{kind}")
        self.async_iter = kind == "ticker"
        if kind == "range":
            return i, f"range({self.ch.integer(0, 3)})", (i,)
        if kind == "list":
            items = [self.atom(1, True) for _ in range(self.ch.integer(0, 3))]
            if any(it[1] for it in items):
                self.mark("yield_in_for_iter")
                self.mark("yield_in_list")
                self._note_yield(scope, True)
            return i, "[" + ", ".join(it[0] for it in items) + "]", (i,)
        if kind == "str":
            return i, self.ch.pick(STR_LITS), (i,)
        if kind == "enumerate":
            j = self.fresh("j")
            return f"{j}, {i}", f"enumerate({self.ch.pick(STR_LITS + STR_VARS)}[:3])", (i, j)
        if kind == "zip":
            j = self.fresh("j")
            return f"{i}, {j}", f"zip(range({self.ch.integer(1, 3)}), 'uvw')", (i, j)
        if kind == "reversed":
            return i, f"reversed([1, {self.ch.pick(INT_VARS)}, 3])", (i,)
        if kind == "dict_items":
            j = self.fresh("k")
            return f"{j}, {i}", "{'p': 1, 'q': n, 'r': s}.items()", (i, j)
        if kind == "list_copy":
            return i, "L[:3]", (i,)
        if kind == "ticker":  # async mode: ``async for`` over the async iterator ``Ticker``
            n, _ = self.int_(1, False)  # no await in the iterable of an ``async for``: AITER_OF_BUG
            args = f"{n} % 4"
            pause = self.ch.chance(40)
            if pause:
                self.mark("yield_in_anext")
                self.fn_yields += 1
                args += ", True"
            if self.ch.chance(15):
                self.mark("async_for_raises")
                args += f", fail={self.ch.integer(0, 2)}"
            self._note_yield(scope, pause)
            return i, f"Ticker({args})", (i,)
        arg, ay = self.atom(1, True)
        if ay:
            self.mark("yield_in_for_iter")
            self._note_yield(scope, True)
        return i, f"sub({arg})", (i,)

    def s_for(self, scope: Scope, depth: int) -> list[str]:
        self.mark("for")
        target, src, names = self.iterable(scope)
        inner = self.sub_scope(scope, loop=True, extra=scope.extra + names, place="loop")
        is_async = self.async_iter
        if is_async:
            self.mark("async_for")
        head = "async for" if is_async else "for"
        lines = [f"{head} {target} in {src}:"] + self.indent(self.block(inner, depth + 1))
        if self.ch.chance(30):
            self.mark("for_else")
            if is_async:
                self.mark("async_for_else")
            lines += ["else:"] + self.indent(self.block(scope, depth + 1))
        return lines

    def s_while(self, scope: Scope, depth: int) -> list[str]:
        self.mark("while")
        w = self.fresh("w")
        inner = self.sub_scope(scope, loop=True, place="loop")
        bound = self.ch.integer(1, 3)
        if self.ch.chance(25):
            self.mark("while_true")
            head = ["while True:", f"    {w} += 1", f"    if {w} > {bound}:", "        break"]
        else:
            test = f"{w} < {bound}"
            if self.ch.chance(30):
                c, cy = self.cond(1, True, scope=scope)
                if cy:
                    self.mark("yield_in_while_test")
                    self._note_yield(scope, True)
                test += f" and {c}"
            head = [f"while {test}:", f"    {w} += 1"]
        lines = [f"{w} = 0"] + head + self.indent(self.block(inner, depth + 1))
        if self.ch.chance(25):
            self.mark("while_else")
            lines += ["else:"] + self.indent(self.block(scope, depth + 1))
        return lines

    def s_try(self, scope: Scope, depth: int) -> list[str]:
        body_scope = self.sub_scope(scope, place="try")
        lines = ["try:"] + self.indent(self.block(body_scope, depth + 1))
        n_handlers = self.ch.weighted([(3, "1"), (1, "2"), (1, "0")])
        n_handlers = int(n_handlers)
        for _ in range(n_handlers):
            exc = self.ch.pick(EXC_TYPES)
            if exc.startswith("("):
                self.mark("except_tuple")
            name = None
            if self.ch.chance(50):
                name = self.fresh("e")
                self.mark("except_as")
            hscope = self.sub_scope(scope, handler=True, exc_var=name or scope.exc_var,
                                    extra=scope.extra + ((name,) if name else ()), place="except")
            lines += [f"except {exc}{f' as {name}' if name else ''}:"]
            lines += self.indent(self.block(hscope, depth + 1))
        if n_handlers:
            self.mark("try_except")
            if self.ch.chance(30):
                self.mark("try_else")
                lines += ["else:"] + self.indent(self.block(self.sub_scope(scope, place="else"),
                                                            depth + 1))
        if not n_handlers or self.ch.chance(40):
            self.mark("try_finally")
            if n_handlers:
                self.mark("try_except_finally")
            lines += ["finally:"] + self.indent(
                self.block(self.sub_scope(scope, place="finally"), depth + 1))
        return lines

    def s_with(self, scope: Scope, depth: int) -> list[str]:
        self.mark("with")
        items, names = [], ()
        y0 = self.fn_yields
        is_async, pauses = self.async_ and self.ch.chance(50), 0
        if is_async:  # ``async with`` over ``ACM`` (whose methods may suspend)
            self.mark("async_with")
        for _ in range(2 if self.ch.chance(20) else 1):
            tag, _ = self.atom(1, True)
            suppress = self.ch.chance(35)
            if suppress:
                self.mark("with_suppress")
            if is_async:
                pause = self.ch.chance(50)
                if pause:
                    self.mark("yield_in_aenter_aexit")
                    pauses += 1
                item = f"ACM({tag}, {suppress}{', True' if pause else ''})"
            else:
                item = f"CM({tag}{', True' if suppress else ''})"
            if self.ch.chance(50):
                c = self.fresh("c")
                self.mark("with_as")
                item += f" as {c}"
                names += (c,)
            items.append(item)
        if len(items) == 2:
            self.mark("with_two_items")
        if self.fn_yields > y0:
            self.mark("yield_in_with_header")
            self._note_yield(scope, True)
        elif pauses:
            self._note_yield(scope, True)
        self.fn_yields += pauses
        inner = self.sub_scope(scope, extra=scope.extra + names, place="with")
        head = "async with" if is_async else "with"
        return [f"{head} {', '.join(items)}:"] + self.indent(self.block(inner, depth + 1))

    # ------------------------------------------------------------------ functions / module
    def function(self, name: str, *, in_sub: bool, depth: int) -> list[str]:
        self.in_sub = in_sub
        self.fn_yields = 0
        saved = self.max_depth
        self.max_depth = depth
        body = list(INIT) + self.block(Scope(), 0, lo=2)
        if self.ch.chance(30):
            body += self.s_simple("return", Scope())
        self.max_depth = saved
        if self.fn_yields == 0:  # must stay a generator function (async: suspend at least once)
            body.append(self.susp("n"))
        return [f"{'async ' if self.async_ else ''}def {name}(a, b=2):"] + self.indent(body)

    def program(self) -> Program:
        sub = self.function("sub", in_sub=True, depth=max(1, self.max_depth - 1))
        name = "main" if self.async_ else "gen"
        gen = self.function(name, in_sub=False, depth=self.max_depth)
        a = self.ch.pick(("0", "1", "'p'", "None", "[1, 2]"))
        entry = f"{name}({a})" if self.ch.chance(70) else f"{name}({a}, {self.ch.integer(0, 3)})"
        body = "\n".join(sub) + "\n\n\n" + "\n".join(gen) + "\n"
        source = (async_prelude(body) if self.async_ else PRELUDE) + "\n\n" + body
        return Program(source, entry, frozenset(self.kinds))


def build_program(chooser: Chooser, **kw) -> Program:
    return ProgramBuilder(chooser, **kw).program()


def random_program(seed: int, **kw) -> Program:
    return build_program(RandomChooser(random.Random(seed)), **kw)


# ----------------------------------------------------------------------------------- scripts

SENT_VALUES = (0, 1, 2, 3, -1, "a", "bc", None)
THROWN = ("ValueError('t')", "KeyError('k')", "Oops('o')")


def build_script(ch: Chooser, max_len: int = 12) -> list:
    """1..max_len operations: NEXT about half of the time, then send, throw, close."""
    from harness import CLOSE, NEXT, Expr, send, throw
    out = []
    for _ in range(ch.integer(1, max_len)):
        kind = ch.integer(0, 19)
        if kind < 10:
            out.append(NEXT)
        elif kind < 15:
            out.append(send(ch.pick(SENT_VALUES)))
        elif kind < 18:
            out.append(throw(Expr(ch.pick(THROWN))))
        else:
            out.append(CLOSE)
    return out


def build_case(ch: Chooser, **kw) -> tuple[Program, list]:
    """A program and a script, both from ``ch``."""
    program = build_program(ch, **kw)
    return program, build_script(ch)
