"""Differential fuzzing of ``async def`` programs: random coroutines, random send/throw/close scripts.

The async mode of ``program_gen.py`` (``async_=True``) writes the same random programs as the
generator mode with every suspension an ``await suspend(v)`` (``await echo(v)`` when ``v`` itself
suspends) and every ``yield from sub(...)`` an ``await sub(...)``, plus constructs of their own:
``async for`` over the async iterator ``Ticker`` (whose ``__anext__`` may suspend or raise),
``async with`` over the async context manager ``ACM`` (whose ``__aenter__``/``__aexit__`` may
suspend), list and dict comprehensions that await or ``async for``, the helper coroutines ``each``
(for ``yield from <iterable>``) and ``echo``, and a coroutine held in a local before it is awaited.
The harness drives ``main(...)`` natively and compiled (``NEXT`` is ``send(None)``) with a snapshot
-> detach -> restore round trip before the first step and after every step (and, for ~4% of the
examples, once in a fresh process); any difference is a compiler/runtime bug.

Environment:
  DG_RANDOM_ASYNC_EXAMPLES=N   run N examples (not derandomized) instead of the CI budget
                               (40 examples, fixed seed).
"""
from __future__ import annotations

import os
import types
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from program_gen import (ASYNC_REQUIRED_KINDS, DrawChooser, Program, build_case, build_program,
                         random_program)
from test_random_programs import check_program

# As for generators: a helper left suspended where it ignores GeneratorExit is reported by the
# finalizer on both sides; a coroutine held in a local (h = sub(...)) that a throw kept from being
# awaited warns "never awaited", on both sides too.
pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")]

CI_EXAMPLES = 40
_LOCAL_EXAMPLES = os.environ.get("DG_RANDOM_ASYNC_EXAMPLES")

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large])
if _LOCAL_EXAMPLES:
    FUZZ_SETTINGS = settings(max_examples=int(_LOCAL_EXAMPLES), **_COMMON)
else:  # CI: reproducible
    FUZZ_SETTINGS = settings(max_examples=CI_EXAMPLES, derandomize=True, database=None, **_COMMON)


@st.composite
def async_programs(draw) -> Program:
    return build_program(DrawChooser(draw), async_=True)


@st.composite
def async_cases(draw) -> tuple[Program, list]:
    """A random async program and a random script of 1-12 operations (shrinks towards NEXT)."""
    return build_case(DrawChooser(draw), async_=True)


@FUZZ_SETTINGS
@given(case=async_cases(), fresh=st.integers(0, 24).map(lambda k: k == 24))  # ~4%: fresh process
def test_random_async_programs(case, fresh):
    program, script = case
    check_program(program, script, fresh)


# ------------------------------------------------------------------------------ generator health

N_COVERAGE = 300


def _drive_natively(program: Program, steps: int = 400) -> bool:
    """Run the program's ``main`` and ``sub`` natively with send(None) until they finish; True if
    both did within ``steps``."""
    module = types.ModuleType("dg_random_async_check")
    exec(compile(program.source, "<random async program>", "exec"), module.__dict__)
    main = eval(program.entry, module.__dict__)
    sub = module.sub(1)
    for coro in (main, sub):
        assert isinstance(coro, types.CoroutineType), program.source
        try:
            for _ in range(steps):
                try:
                    coro.send(None)
                except StopIteration:
                    break
                except Exception:  # noqa: BLE001 - a raising program is fine, it finished
                    break
            else:
                return False
        finally:
            coro.close()
    return True


def test_async_program_generator_covers_constructs_and_terminates():
    """The async builder (driven by a seeded Random) must keep producing every construct kind,
    valid Python on this interpreter, and programs that finish."""
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... was never awaited"
        for seed in range(N_COVERAGE):
            program = random_program(seed, async_=True)
            seen |= program.kinds
            try:
                compile(program.source, f"<seed {seed}>", "exec")
            except SyntaxError as e:  # pragma: no cover - a builder bug
                pytest.fail(f"seed {seed}: invalid program: {e}\n{program.source}")
            assert _drive_natively(program), f"seed {seed}: does not terminate\n{program.source}"
    missing = sorted(ASYNC_REQUIRED_KINDS - seen)
    assert not missing, f"the async program builder no longer generates: {missing}"


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=async_programs())
def test_hypothesis_driven_async_programs_are_valid(program):
    compile(program.source, "<hypothesis program>", "exec")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert _drive_natively(program), program.source


def test_async_mode_leaves_the_generator_mode_alone():
    """Same seed, same generator program whatever the async mode adds; async programs differ."""
    assert random_program(7).source == random_program(7, async_=False).source
    gen, coro = random_program(7), random_program(7, async_=True)
    assert "async def main(" in coro.source and "async def" not in gen.source
    assert random_program(7, async_=True).source == coro.source
