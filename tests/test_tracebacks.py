"""Positions of compiled code (README: "Tracebacks, debuggers, coverage").

Code compiled by the import hook carries the original file name and line numbers, so tracebacks,
``pdb`` breakpoints and line tracing (what coverage.py records through ``sys.settrace``) name the
source the user wrote. Files written by ``durable compile`` map back through ``# dg@N`` comments on
compiled lines; code outside durable functions is copied unchanged.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

from harness import native_and_hooked
from transpiler.artifact import compile_file_text

ROOT = Path(__file__).resolve().parent.parent

SOURCE = textwrap.dedent('''
    """Traced flows."""
    from runtime import durable


    def helper(x):
        if x > 100:
            raise ValueError("helper: too big")
        return x + 1


    @durable
    def flow(n):
        total = 0
        for i in range(n):
            got = yield total
            if got == "fail":
                raise RuntimeError("flow failed")
            total += helper(got)
        return total
''').lstrip()


def line_of(needle: str) -> int:
    [found] = [n for n, line in enumerate(SOURCE.splitlines(), 1) if needle in line]
    return found


@pytest.fixture
def hooked(tmp_path: Path):
    """Imports SOURCE twice: natively, and compiled through the import hook."""
    with native_and_hooked(tmp_path, "traced", SOURCE) as pair:
        yield pair


def drive(module, script):
    gen = module.flow(3)
    next(gen)
    try:
        for value in script:
            gen.send(value)
    except StopIteration:
        pass
    except Exception as exc:  # noqa: BLE001 - the tests look at it
        return exc
    return None


def traced_lines(module, script) -> set[int]:
    """The lines of ``module``'s file that ran, as a line tracer (coverage.py's) sees them."""
    filename = module.__file__
    seen: set[int] = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename == filename and event == "line":
            seen.add(frame.f_lineno)
        return tracer

    sys.settrace(tracer)
    try:
        drive(module, script)
    finally:
        sys.settrace(None)
    return seen


def test_traceback_names_the_source_line_in_the_durable_function(hooked):
    native, compiled = hooked
    error = drive(compiled, [1, "fail"])
    frames = traceback.extract_tb(error.__traceback__)
    assert (frames[-1].filename, frames[-1].lineno, frames[-1].name) == \
        (compiled.__file__, line_of('raise RuntimeError("flow failed")'), "flow")
    assert frames[-1].line == 'raise RuntimeError("flow failed")'


def test_traceback_through_a_helper_called_from_the_durable_function(hooked):
    native, compiled = hooked
    want = [(f.lineno, f.name, f.line) for f in traceback.extract_tb(drive(native, [1, 500]).__traceback__)][-2:]
    got = [(f.lineno, f.name, f.line) for f in traceback.extract_tb(drive(compiled, [1, 500]).__traceback__)][-2:]
    assert got == want


def test_line_tracing_sees_the_lines_native_code_runs(hooked):
    """What coverage.py measures: every line the native generator runs is reported as run, and no
    line outside the function is."""
    native, compiled = hooked
    for script in ([1, 2, 3], [1, "fail"]):
        native_lines = traced_lines(native, script)
        compiled_lines = traced_lines(compiled, script)
        assert native_lines <= compiled_lines, sorted(native_lines - compiled_lines)
        function = range(line_of("def flow"), len(SOURCE.splitlines()) + 1)
        helper = range(line_of("def helper"), line_of("return x + 1") + 1)
        assert all(n in function or n in helper for n in compiled_lines), sorted(compiled_lines)


def test_code_objects_start_at_the_def_line(hooked):
    native, compiled = hooked
    assert compiled.flow.__code__.co_firstlineno == native.flow.__code__.co_firstlineno
    assert compiled.helper.__code__.co_firstlineno == native.helper.__code__.co_firstlineno


def test_pdb_stops_at_a_breakpoint_on_a_source_line(tmp_path: Path):
    (tmp_path / "traced_flows.py").write_text(SOURCE, encoding="utf-8")
    line = line_of("total += helper(got)")
    driver = textwrap.dedent(f"""
        import pdb, sys
        from transpiler import install_import_hook
        install_import_hook(["traced_flows"])
        import traced_flows
        gen = traced_flows.flow(3)
        debugger = pdb.Pdb(nosigint=True)
        debugger.set_break(traced_flows.__file__, {line})
        debugger.set_trace()
        next(gen)
        gen.send(5)
    """)
    commands = "continue\np (got, total)\nwhere\ncontinue\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", driver], input=commands, cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(5, 0)" in proc.stdout, proc.stdout
    assert re.search(rf"traced_flows\.py\({line}\)flow\(\)", proc.stdout), proc.stdout
    assert "-> total += helper(got)" in proc.stdout, proc.stdout


CLI_RUN = """
import traceback, traced_flows
gen = traced_flows.flow(3)
next(gen)
for value in {script!r}:
    try:
        gen.send(value)
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        print(frames[-1].lineno, frames[-1].line, sep="|")
        break
"""


@pytest.mark.parametrize("script, needle", [([1, "fail"], 'raise RuntimeError("flow failed")'),
                                            ([1, 500], 'raise ValueError("helper: too big")')])
def test_files_compiled_by_the_cli_map_back_through_origin_comments(tmp_path: Path, script, needle):
    """The traceback of a CLI-compiled file shows the compiled file's line; its text ends with
    ``# dg@N`` (N the source line) inside durable functions, and is the source line unchanged elsewhere."""
    path = tmp_path / "traced_flows.py"
    path.write_text(compile_file_text(SOURCE.encode(), "traced_flows.py"), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", CLI_RUN.format(script=script)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lineno, text = proc.stdout.strip().split("|", 1)
    compiled_lines = path.read_text(encoding="utf-8").splitlines()
    assert compiled_lines[int(lineno) - 1].strip() == text
    mark = re.search(r"#\s*dg@(\d+)\s*$", text)
    if "flow failed" in needle:
        assert mark and int(mark.group(1)) == line_of(needle), text
    else:
        assert text == needle and not mark


CARETS = textwrap.dedent('''
    from runtime import durable


    def helper(x):
        if x > 100:
            raise ValueError("helper: too big")
        return x + 1


    @durable
    def verbatim(n):
        total = 0
        for i in range(n):
            got = yield total
            total += helper(got)
        return total


    @durable
    def rewritten(n):
        return helper((yield n)) + helper(n)
''').lstrip()


def _caret_tracebacks(tmp_path: Path, function: str) -> tuple[list[str], list[str]]:
    """The last two frames of a traceback from ``function``, as printed, native and compiled by the hook."""
    shown = []
    native_source = CARETS.replace("from runtime import durable", "durable = lambda f: f")
    with native_and_hooked(tmp_path, "caret", CARETS, native_source) as modules:
        for module in modules:
            gen = getattr(module, function)(3)
            next(gen)
            with pytest.raises(ValueError) as info:
                gen.send(500)
            frames = traceback.format_tb(info.value.__traceback__)[-2:]
            shown.append([text.replace(module.__file__, "FILE") for text in frames])
    return shown[0], shown[1]


@pytest.mark.parametrize("function", ["verbatim", "rewritten"])
def test_traceback_carets_point_where_native_ones_do_or_are_left_out(tmp_path: Path, function: str):
    """A statement the compiler copies (re-indented) keeps the native carets; one it rewrote around a
    yield shows its source line without carets rather than carets at the wrong columns. (3.10 shows no
    carets at all: there the compiled traceback must equal the native one, file, line and text.)"""
    native, compiled = _caret_tracebacks(tmp_path, function)
    assert ("^" in native[0]) == (sys.version_info >= (3, 11)), native
    if function == "verbatim":
        assert compiled == native
    else:
        without_carets = [re.sub(r"\n *[~^]+ *\n", "\n", text) for text in native]
        assert compiled == without_carets, (compiled, native)
