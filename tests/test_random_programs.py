"""Differential fuzzing: random generator functions, random send/throw/close scripts.

Hypothesis builds a module (see ``program_gen.py``) with a random ``gen(a, b=2)`` and a random
helper generator ``sub`` and a random script of 1-12 operations; the harness runs it natively and
compiled with a snapshot -> detach -> restore round trip before the first step and after every
step (and, for a small fraction of examples, restores once in a fresh process).  Any difference is
a compiler/runtime bug: Hypothesis shrinks the program and prints it with the script and the diff.

Environment:
  DG_RANDOM_EXAMPLES=N   run N examples (not derandomized, e.g. 5000) instead of the CI budget
                         (120 examples, fixed seed).
"""
from __future__ import annotations

import gc
import inspect
import os
import types

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from harness import differential
from program_gen import (REQUIRED_KINDS, DrawChooser, Program, build_case, build_program,
                         random_program)

# Random programs often leave a helper generator suspended where it ignores GeneratorExit; CPython
# reports that from the finalizer ("Exception ignored in ...") on both sides - expected noise.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CI_EXAMPLES = 120
_LOCAL_EXAMPLES = os.environ.get("DG_RANDOM_EXAMPLES")

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                      HealthCheck.data_too_large])
if _LOCAL_EXAMPLES:
    FUZZ_SETTINGS = settings(max_examples=int(_LOCAL_EXAMPLES), **_COMMON)
else:  # CI: reproducible; about 45 s on 3.11, 60-70 s on 3.10/3.12/3.13
    FUZZ_SETTINGS = settings(max_examples=CI_EXAMPLES, derandomize=True, database=None, **_COMMON)

# ----------------------------------------------------------------------------------- strategies


@st.composite
def programs(draw) -> Program:
    return build_program(DrawChooser(draw))


@st.composite
def cases(draw) -> tuple[Program, list]:
    """A random program and a random script of 1-12 operations (shrinks towards NEXT)."""
    return build_case(DrawChooser(draw))


def _script_text(script: list) -> str:
    return "[" + ", ".join(op.label() for op in script) + "]"


def check_program(program: Program, script: list, fresh: bool) -> None:
    """Run the differential check; on failure the message carries the program and the script."""
    text = (f"\n--- program (entry {program.entry}) ---\n{program.source}"
            f"--- script: {_script_text(script)}  fresh process: {fresh}")
    try:
        differential(program.source, script, entry=program.entry,
                     fresh_at="middle" if fresh else None)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{text}") from e
    except Exception:  # e.g. CompileError or an internal error: Hypothesis prints the note
        note(text)
        raise


# ----------------------------------------------------------------------------------- the fuzz test


@FUZZ_SETTINGS
@given(case=cases(), fresh=st.integers(0, 24).map(lambda k: k == 24))  # ~4%: fresh process too
def test_random_program_native_equals_compiled(case, fresh):
    program, script = case
    check_program(program, script, fresh)


# ------------------------------------------------------------------------------ generator health

N_COVERAGE = 300


def _drive_natively(program: Program, steps: int = 400) -> bool:
    """Run the program natively with next() until it finishes; True if it did within ``steps``."""
    module = types.ModuleType("dg_random_check")
    exec(compile(program.source, "<random program>", "exec"), module.__dict__)
    gen = eval(program.entry, module.__dict__)
    assert inspect.isgenerator(gen), program.source
    sub = module.sub(1)
    assert inspect.isgenerator(sub), program.source
    for it in (gen, sub):
        for _ in range(steps):
            try:
                next(it)
            except StopIteration:
                break
            except Exception:  # noqa: BLE001 - a raising program is fine, it finished
                break
        else:
            return False
    return True


def test_program_generator_covers_constructs_and_terminates():
    """The builder (driven by a seeded Random) must keep producing every construct kind, valid
    Python on this interpreter, and programs that finish."""
    seen: set[str] = set()
    for seed in range(N_COVERAGE):
        program = random_program(seed)
        seen |= program.kinds
        try:
            compile(program.source, f"<seed {seed}>", "exec")
        except SyntaxError as e:  # pragma: no cover - a builder bug
            pytest.fail(f"seed {seed}: invalid program: {e}\n{program.source}")
        assert _drive_natively(program), f"seed {seed}: does not terminate\n{program.source}"
    missing = sorted(REQUIRED_KINDS - seen)
    assert not missing, f"the program builder no longer generates: {missing}"


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=programs())
def test_hypothesis_driven_programs_are_valid(program):
    """The Hypothesis-driven builder yields valid, terminating programs too (same builder)."""
    compile(program.source, "<hypothesis program>", "exec")
    assert _drive_natively(program), program.source


def test_random_chooser_is_deterministic():
    assert random_program(7).source == random_program(7).source


# ------------------------------------------------------------------------ nothing left behind

IGNORES_CLOSE = '''
LOG = []


def gen():
    try:
        yield 1
    finally:
        yield 2          # close() at the end of the script is ignored here: RuntimeError
        LOG.append("after")
'''


def _suspended_generators_of(*modules: types.ModuleType) -> list:
    gc.collect()
    namespaces = [module.__dict__ for module in modules]
    return [obj for obj in gc.get_objects() if inspect.isgenerator(obj) and obj.gi_frame is not None
            and any(obj.gi_frame.f_globals is ns for ns in namespaces)]


def test_generators_that_ignore_close_are_finished_before_the_test_ends():
    """A program whose generator ignores the end-of-script close() (a yield in a finally) must not
    outlive its test: left suspended, it is finalized at interpreter exit, after the modules are torn
    down, and prints "Exception ignored in: <generator ...>" tracebacks after pytest's summary."""
    result = differential(IGNORES_CLOSE, ["next"], fresh_at=None)
    end = result.native[-1]  # what the script saw is kept: the close was ignored
    assert end["value"]["type"] == "RuntimeError" and not end["finished"], end
    assert _suspended_generators_of(result.native_module, result.compiled_module) == []
