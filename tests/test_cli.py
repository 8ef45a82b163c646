"""The ``durable`` command line (README: "Command line").

``durable compile PATH... (-o OUTDIR | --in-place | --stdout) [--all-generators]`` and
``durable check PATH... [--all-generators]``; exit codes 0 success, 2 usage error, 3 errors in the
compiled code (``path:line:col: error: CODE message`` on stderr), 123 internal error.

The console script is not installed here: the CLI is driven with click's ``CliRunner`` on
``transpiler.cli.main`` and, for exit codes and the absence of tracebacks, through a real
interpreter running ``from transpiler.cli import run; run()``.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from transpiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
RUN = "from transpiler.cli import run; run()"


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def env(*paths: Path | str) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT)])
    e.pop("PYTHONSTARTUP", None)
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    return e


def invoke(*args: str, cwd: Path | None = None):
    runner = CliRunner()
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def durable_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, *args], cwd=str(cwd), env=env(),
                          capture_output=True, text=True, timeout=120)


def python(code: str, *paths: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(cwd), env=env(*paths),
                          capture_output=True, text=True, timeout=120)


def no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text


GOOD = src("""
    from runtime import durable


    @durable
    def accumulate(n):
        total = 0
        for i in range(n):
            received = yield (i, total)
            total += received or 0
        return total


    def helper(x):
        return x * 2
""")

# what the native generator does with the script: next(), send(10), [snapshot here], send(5), send(1)
# natively: (0, 0); (1, 10); (2, 15); then StopIteration(16)

BAD = src("""
    from runtime import durable

    X = 1

    @durable
    def not_a_generator():
        return 1
""")
BAD_LINE, BAD_COL = 6, 1  # the def line of not_a_generator (1-based column of `def`)

ERROR_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<code>DG\d{3}) ", re.M)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "good_flows.py").write_text(GOOD, encoding="utf-8")
    (tmp_path / "bad_flows.py").write_text(BAD, encoding="utf-8")
    return tmp_path


DRIVE_AND_SNAPSHOT = """
    import sys
    import runtime
    import {module} as m
    gen = m.accumulate(3)
    assert next(gen) == (0, 0), "first"
    assert gen.send(10) == (1, 10), "second"
    data = runtime.snapshot(gen)
    runtime.detach(gen)
    open("snap.bin", "wb").write(data)
    later = runtime.restore(data)
    assert later.send(5) == (2, 15)
    try:
        later.send(1)
    except StopIteration as stop:
        assert stop.value == 16, stop.value
    else:
        raise AssertionError("did not finish")
    assert "libcst" not in sys.modules and "transpiler" not in sys.modules
    print("OK")
"""

RESTORE_FRESH = """
    import sys
    import runtime
    runtime.allow_modules("{module}")  # restore imports only allowed modules
    later = runtime.restore(open("snap.bin", "rb").read())
    assert later.send(5) == (2, 15)
    try:
        later.send(1)
    except StopIteration as stop:
        assert stop.value == 16, stop.value
    assert "libcst" not in sys.modules and "transpiler" not in sys.modules
    print("OK")
"""


def check_compiled_module_works(directory: Path, module: str) -> None:
    """Import the compiled module in a fresh interpreter (no compiler imported), snapshot, restore in
    the same and in another fresh interpreter."""
    first = python(DRIVE_AND_SNAPSHOT.format(module=module), directory, cwd=directory)
    assert first.returncode == 0 and first.stdout.strip() == "OK", first.stderr
    second = python(RESTORE_FRESH.format(module=module), directory, cwd=directory)
    assert second.returncode == 0 and second.stdout.strip() == "OK", second.stderr


# ============================================================================ compile --stdout


def test_compile_stdout_prints_compiled_code_that_works(work: Path, tmp_path_factory):
    result = invoke("compile", str(work / "good_flows.py"), "--stdout")
    assert result.exit_code == 0, result.output
    assert "_dg_rt.compiled" in result.stdout
    assert "_dg_rt.compiled" not in result.stderr
    # the source file is untouched
    assert (work / "good_flows.py").read_text(encoding="utf-8") == GOOD
    out = tmp_path_factory.mktemp("stdout_out")
    (out / "cli_stdout_flows.py").write_text(result.stdout, encoding="utf-8")
    compile(result.stdout, "cli_stdout_flows.py", "exec")
    check_compiled_module_works(out, "cli_stdout_flows")


def test_compile_one_file_without_an_output_option_prints_it(work: Path):
    """Like a formatter: `durable compile FILE` prints the compiled file when nothing says where it goes;
    several files need a place, and the message says which options give one."""
    printed = invoke("compile", "good_flows.py", cwd=work)
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == invoke("compile", "good_flows.py", "--stdout", cwd=work).stdout
    assert "_dg_rt.compiled" in printed.stdout and sorted(p.name for p in work.iterdir()) == ["bad_flows.py",
                                                                                                 "good_flows.py"]
    several = invoke("compile", "good_flows.py", "bad_flows.py", cwd=work)
    assert several.exit_code == 2
    assert "2 paths: say where the compiled files go with -o OUTDIR or --in-place" in several.stderr
    package = invoke("compile", ".", cwd=work)
    assert package.exit_code == 2 and ". is a package: say where the compiled files go" in package.stderr
    check = invoke("compile", "good_flows.py", "--check", cwd=work)
    assert check.exit_code == 2 and "--check and --diff compare with the compiled files on disk" in check.stderr


def test_check_and_compile_with_no_files_say_so(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    checked = invoke("check", "empty", cwd=tmp_path)
    assert checked.exit_code == 0 and checked.stderr == "no files to check\n", checked.stderr
    compiled = invoke("compile", "empty", "-o", "out", cwd=tmp_path)
    assert compiled.exit_code == 0 and compiled.stderr == "no files to compile\n", compiled.stderr


def test_every_command_has_a_whole_summary_and_ls_explains_each_status():
    overview = invoke("--help").stdout
    commands = overview.split("Commands:")[1].strip().splitlines()
    assert len(commands) == 13 and not any(line.endswith("...") for line in commands), overview
    listing = " ".join(invoke("ls", "--help").stdout.split())
    for status in ("pending (", "sleeping (", "waiting (", "finished (", "failed (", "cancelled"):
        assert status in listing, listing


def test_compile_stdout_subprocess(work: Path):
    proc = durable_cli("compile", "good_flows.py", "--stdout", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "_dg_rt.compiled" in proc.stdout
    no_traceback(proc.stderr)


# ============================================================================ compile -o OUTDIR


def make_package(root: Path, name: str) -> list[Path]:
    pkg = root / name
    (pkg / "sub" / "deeper").mkdir(parents=True)
    files = {
        "__init__.py": "from runtime import durable\n",
        "flows.py": GOOD,
        "plain.py": "def f():\n    return 1\n",
        "sub/__init__.py": "",
        "sub/more.py": GOOD,
        "sub/deeper/__init__.py": "",
        "sub/deeper/deep.py": GOOD,
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text, encoding="utf-8")
    (pkg / "notes.txt").write_text("not python\n", encoding="utf-8")
    return sorted(Path(rel) for rel in files)


def test_compile_outdir_package_writes_every_py_file(tmp_path: Path):
    src_root = tmp_path / "src"
    src_root.mkdir()
    rels = make_package(src_root, "clipkg_out")
    before = {p: p.read_bytes() for p in (src_root / "clipkg_out").rglob("*") if p.is_file()}
    out = tmp_path / "build"
    result = invoke("compile", str(src_root / "clipkg_out"), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    written = sorted(p.relative_to(out / "clipkg_out") for p in (out / "clipkg_out").rglob("*.py"))
    assert written == rels
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == \
        sorted(Path("clipkg_out") / r for r in rels)
    # sources untouched
    assert {p: p.read_bytes() for p in (src_root / "clipkg_out").rglob("*") if p.is_file()} == before
    for rel in ("flows.py", "sub/more.py", "sub/deeper/deep.py"):
        assert "_dg_rt.compiled" in (out / "clipkg_out" / rel).read_text(encoding="utf-8"), rel
    assert (out / "clipkg_out" / "plain.py").read_text(encoding="utf-8").strip().endswith("return 1")
    check_compiled_module_works(out, "clipkg_out.sub.deeper.deep")


def test_compile_outdir_single_file_and_subprocess(work: Path):
    proc = durable_cli("compile", "good_flows.py", "-o", "outdir", cwd=work)
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc.stderr)
    assert proc.stdout == ""
    target = work / "outdir" / "good_flows.py"
    assert "_dg_rt.compiled" in target.read_text(encoding="utf-8")
    check_compiled_module_works(work / "outdir", "good_flows")


# ============================================================================ compile --in-place


def test_compile_in_place_rewrites_the_file(tmp_path: Path):
    path = tmp_path / "cli_inplace_flows.py"
    path.write_text(GOOD, encoding="utf-8")
    result = invoke("compile", str(path), "--in-place")
    assert result.exit_code == 0, result.output
    text = path.read_text(encoding="utf-8")
    assert text != GOOD and "_dg_rt.compiled" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli_inplace_flows.py"]
    check_compiled_module_works(tmp_path, "cli_inplace_flows")


def test_compile_in_place_on_a_package(tmp_path: Path):
    rels = make_package(tmp_path, "clipkg_inplace")
    result = invoke("compile", str(tmp_path / "clipkg_inplace"), "--in-place")
    assert result.exit_code == 0, result.output
    for rel in ("flows.py", "sub/more.py", "sub/deeper/deep.py"):
        assert "_dg_rt.compiled" in (tmp_path / "clipkg_inplace" / rel).read_text(encoding="utf-8")
    assert len(rels) == len(list((tmp_path / "clipkg_inplace").rglob("*.py")))
    check_compiled_module_works(tmp_path, "clipkg_inplace.sub.more")


# ============================================================================ usage errors


USAGE_CASES = {
    "no-mode-two-files": ["compile", "good_flows.py", "bad_flows.py"],
    "no-mode-package": ["compile", "."],
    "no-mode-check": ["compile", "good_flows.py", "--check"],
    "stdout-and-in-place": ["compile", "good_flows.py", "--stdout", "--in-place"],
    "outdir-and-stdout": ["compile", "good_flows.py", "-o", "o", "--stdout"],
    "all-three": ["compile", "good_flows.py", "-o", "o", "--stdout", "--in-place"],
    "missing-path": ["compile", "does_not_exist.py", "--stdout"],
    "missing-path-check": ["check", "does_not_exist.py"],
    "no-paths": ["compile", "--stdout"],
    "unknown-option": ["compile", "good_flows.py", "--stdout", "--frobnicate"],
}


@pytest.mark.parametrize("args", list(USAGE_CASES.values()), ids=list(USAGE_CASES))
def test_usage_errors_exit_2(work: Path, args):
    result = invoke(*args, cwd=work)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    assert (work / "good_flows.py").read_text(encoding="utf-8") == GOOD
    assert not (work / "o").exists()


@pytest.mark.parametrize("args", [USAGE_CASES["no-mode-two-files"], USAGE_CASES["stdout-and-in-place"],
                                  USAGE_CASES["missing-path"]], ids=["no-mode", "two-modes", "missing-path"])
def test_usage_errors_exit_2_subprocess(work: Path, args):
    proc = durable_cli(*args, cwd=work)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert "Usage" in proc.stderr or "Error" in proc.stderr
    no_traceback(proc.stderr)
    assert (work / "good_flows.py").read_text(encoding="utf-8") == GOOD


# ============================================================================ DG errors: exit 3


def test_compile_error_exit_3_clirunner(work: Path):
    result = invoke("compile", str(work / "bad_flows.py"), "--stdout")
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    m = ERROR_LINE.search(result.stderr)
    assert m, result.stderr
    assert Path(m["path"]) == work / "bad_flows.py"
    assert (int(m["line"]), int(m["col"]), m["code"]) == (BAD_LINE, BAD_COL, "DG004")
    no_traceback(result.stderr)


def test_compile_error_exit_3_subprocess(work: Path):
    proc = durable_cli("compile", "bad_flows.py", "--stdout", cwd=work)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    assert f"bad_flows.py:{BAD_LINE}:{BAD_COL}: error: DG004" in proc.stderr
    no_traceback(proc.stderr)


def test_compile_error_in_outdir_mode_writes_nothing_for_the_bad_file(work: Path):
    result = invoke("compile", str(work / "bad_flows.py"), str(work / "good_flows.py"), "-o", str(work / "o"))
    assert result.exit_code == 3
    assert (work / "o" / "good_flows.py").exists()
    assert not (work / "o" / "bad_flows.py").exists()
    assert "bad_flows.py:6:1: error: DG004" in result.stderr


def test_syntax_error_exit_3_subprocess(work: Path):
    (work / "broken.py").write_text("x = 1\ndef f(:\n    pass\n", encoding="utf-8")
    proc = durable_cli("compile", "broken.py", "--stdout", cwd=work)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    m = ERROR_LINE.search(proc.stderr)
    assert m and m["code"] == "DG001" and m["path"] == "broken.py", proc.stderr
    no_traceback(proc.stderr)


def test_in_place_does_not_touch_a_bad_file(work: Path):
    result = invoke("compile", str(work / "bad_flows.py"), "--in-place")
    assert result.exit_code == 3
    assert (work / "bad_flows.py").read_text(encoding="utf-8") == BAD


# ============================================================================ check


def test_check_good_exits_0_and_writes_nothing(work: Path):
    before = sorted(p.name for p in work.iterdir())
    result = invoke("check", str(work / "good_flows.py"))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == before
    assert (work / "good_flows.py").read_text(encoding="utf-8") == GOOD


def test_check_bad_exits_3(work: Path):
    result = invoke("check", str(work / "good_flows.py"), str(work / "bad_flows.py"))
    assert result.exit_code == 3
    assert f"bad_flows.py:{BAD_LINE}:{BAD_COL}: error: DG004" in result.stderr
    assert "good_flows.py:" not in result.stderr.replace("checked", "")
    assert (work / "bad_flows.py").read_text(encoding="utf-8") == BAD


def test_check_subprocess_exit_codes(work: Path):
    good = durable_cli("check", "good_flows.py", cwd=work)
    assert good.returncode == 0, good.stderr
    bad = durable_cli("check", "bad_flows.py", cwd=work)
    assert bad.returncode == 3, bad.stderr
    assert "bad_flows.py:6:1: error: DG004" in bad.stderr
    no_traceback(good.stderr + bad.stderr)


def test_check_all_generators_flag(tmp_path: Path):
    (tmp_path / "undecorated.py").write_text("def g():\n    _dg_x = 1\n    yield _dg_x\n", encoding="utf-8")
    assert invoke("check", str(tmp_path / "undecorated.py")).exit_code == 0
    result = invoke("check", str(tmp_path / "undecorated.py"), "--all-generators")
    assert result.exit_code == 3
    assert "undecorated.py:2:5: error: DG002" in result.stderr


# ============================================================================ --all-generators


UNDECORATED = src("""
    def accumulate(n):
        total = 0
        for i in range(n):
            received = yield (i, total)
            total += received or 0
        return total
""")


def test_all_generators_compiles_undecorated_generators(tmp_path: Path):
    path = tmp_path / "cli_allgen_flows.py"
    path.write_text(UNDECORATED, encoding="utf-8")
    plain = invoke("compile", str(path), "--stdout")
    assert plain.exit_code == 0
    assert "_dg_rt.compiled" not in plain.stdout
    result = invoke("compile", str(path), "--stdout", "--all-generators")
    assert result.exit_code == 0, result.output
    assert "_dg_rt.compiled" in result.stdout
    out = tmp_path / "out"
    out.mkdir()
    (out / "cli_allgen_flows.py").write_text(result.stdout, encoding="utf-8")
    check_compiled_module_works(out, "cli_allgen_flows")


# ============================================================================ --version


def _project_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert m
    return m.group(1)


def test_version_clirunner():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    assert _project_version() in result.stdout


def test_version_subprocess(tmp_path: Path):
    proc = durable_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert _project_version() in proc.stdout
    no_traceback(proc.stderr)


# ============================================================================ # dg@N markers


MARKED = src('''
    """Module docstring."""
    import itertools
    from runtime import durable

    LIMIT = 3


    @durable
    def stepper(n, scale=2):
        """Doc of stepper."""
        acc = []
        for i in range(n):
            doubled = i * scale
            got = yield doubled
            if got is not None:
                acc.append(got)
            else:
                acc.append(-1)
        with open(__file__) as fh:
            first = fh.readline()
            extra = yield first
        try:
            mid = yield len(acc)
        except KeyError:
            mid = "handled"
        finally:
            tail = "done"
        result = (acc, mid, tail, extra)
        return result


    def helper(value):
        squared = value * value
        return squared + LIMIT


    class Holder:
        count = 0

        @durable
        def method(self):
            self.count += 1
            yield self.count
''')

MARK = re.compile(r"^(?P<code>.*?)\s*#\s*dg@(?P<n>\d+)\s*$")


def _compiled_marked(tmp_path: Path) -> str:
    path = tmp_path / "marked_flows.py"
    path.write_text(MARKED, encoding="utf-8")
    result = invoke("compile", str(path), "--stdout")
    assert result.exit_code == 0, result.output
    return result.stdout


def _simple_statements(source: str) -> dict[str, int]:
    """Stripped text -> line of every line that appears exactly once in ``source`` and holds a
    statement (not blank, comment, decorator, docstring or ``else:``/``finally:`` clause)."""
    lines = source.splitlines()
    counts: dict[str, int] = {}
    for text in lines:
        counts[text.strip()] = counts.get(text.strip(), 0) + 1
    result = {}
    for n, text in enumerate(lines, 1):
        t = text.strip()
        if not t or t.startswith(("#", "@", '"""')) or t in ("else:", "finally:", "try:") or counts[t] != 1:
            continue
        result[t] = n
    return result


def _durable_spans(source: str) -> list[range]:
    """Line ranges of the @durable functions of ``source`` (found with ast, independently of the compiler)."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Name) and d.id == "durable" for d in node.decorator_list):
            spans.append(range(node.decorator_list[0].lineno, node.end_lineno + 1))
    return spans


def test_markers_name_the_original_line_of_each_statement(tmp_path: Path):
    compiled = _compiled_marked(tmp_path)
    spans = _durable_spans(MARKED)
    wanted = {t: n for t, n in _simple_statements(MARKED).items() if any(n in span for span in spans)}
    seen: dict[str, list[int]] = {}
    for text in compiled.splitlines():
        m = MARK.match(text)
        if not m:
            continue
        # the compiler may put its own bookkeeping before the statement: `_dg_s = 1; x = yield v`
        for part in (p.strip() for p in m["code"].split(";")):
            if part in wanted:
                seen.setdefault(part, []).append(int(m["n"]))
    wrong = {code: marks for code, marks in seen.items() if any(n != wanted[code] for n in marks)}
    assert not wrong, f"markers naming the wrong line: {wrong} (want {({c: wanted[c] for c in wrong})})"
    # every simple (non-compound) statement of a durable function is found with its marker
    simple = {t: n for t, n in wanted.items() if not t.endswith(":")}
    missing = sorted(set(simple) - set(seen), key=simple.get)
    assert not missing, f"statements without a dg@ marker: {missing}"


def test_code_outside_durable_functions_is_copied_unchanged(tmp_path: Path):
    """Statements outside durable functions keep their text (no marker): the traceback line of an
    error there shows the source line itself."""
    compiled = _compiled_marked(tmp_path).splitlines()
    durable_lines = {n for span in _durable_spans(MARKED) for n in span}
    spans = [range(min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", []))]), s.end_lineno + 1)
             for s in ast.parse(MARKED).body]  # top-level statements holding a durable function
    spans = [span for span in spans if durable_lines & set(span)]
    original = MARKED.splitlines()
    outside = [original[n - 1] for n in range(1, len(original) + 1)
               if original[n - 1].strip() and not any(n in span for span in spans)]
    position = 0
    for line in outside:  # in order, each exactly as written
        position = compiled.index(line, position) + 1
    assert not any(MARK.match(line) for line in outside)


def test_markers_point_at_code_lines(tmp_path: Path):
    compiled = _compiled_marked(tmp_path)
    original = MARKED.splitlines()
    marks = [int(m["n"]) for m in map(MARK.match, compiled.splitlines()) if m]
    assert marks
    for n in marks:
        assert 1 <= n <= len(original)
        text = original[n - 1].strip()
        assert text and not text.startswith("#"), (n, text)


def test_def_statements_carry_their_own_line(tmp_path: Path):
    """A ``def`` is a statement too: a durable function's marker names its original ``def`` line."""
    compiled = _compiled_marked(tmp_path)
    spans = _durable_spans(MARKED)
    defs = {name: n for n, text in enumerate(MARKED.splitlines(), 1)
            for name in re.findall(r"^\s*def (\w+)\(", text) if any(n in span for span in spans)}
    found = {}
    for text in compiled.splitlines():
        d = re.match(r"^\s*def (\w+)\(", text)
        if d and d.group(1) in defs:
            m = MARK.match(text)
            found.setdefault(d.group(1), []).append(int(m["n"]) if m else None)
    assert set(found) == set(defs)
    assert {name: marks for name, marks in found.items() if marks != [defs[name]]} == {}, \
        f"want {defs}, compiled def lines carry {found}"
