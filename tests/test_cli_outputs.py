"""``durable compile`` outputs (README: "Command line"): headers, up-to-date checks, ``--check``,
``--diff``, ``--force``, ``[tool.durable]`` configuration, progress and internal errors.

Exit codes: 0 success, 1 ``--check`` found work, 2 usage, 3 errors in the user's code, 123 internal.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import transpiler
from transpiler import artifact, cli
from transpiler.cli import main

ROOT = Path(__file__).resolve().parent.parent

FLOWS = textwrap.dedent('''
    """Flows."""
    from runtime import durable


    @durable
    def counter(n):
        total = 0
        for i in range(n):
            total += yield i
        return total
''').lstrip()

PLAIN = "def helper(x):\n    return x + 1\n"
BAD = "from runtime import durable\n\n\n@durable\ndef not_a_generator():\n    return 1\n"


def invoke(*args: str, cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "flows.py").write_text(FLOWS, encoding="utf-8")
    (pkg / "plain.py").write_text(PLAIN, encoding="utf-8")
    return tmp_path


def header_of(path: Path) -> artifact.Header:
    header = artifact.read_header(path.read_text(encoding="utf-8"))
    assert header is not None, path.read_text(encoding="utf-8")[:200]
    return header


# ============================================================================ headers


def test_outputs_start_with_a_header_naming_version_options_and_source_hash(proj: Path):
    result = invoke("compile", "app", "-o", "out", cwd=proj)
    assert result.exit_code == 0, result.output
    header = header_of(proj / "out" / "app" / "flows.py")
    assert header.version == transpiler.__version__ and header.format == transpiler.FORMAT_VERSION
    assert header.digest == hashlib.sha256((proj / "app" / "flows.py").read_bytes()).hexdigest()
    assert (header.name, header.options) == ("flows.py", "default")
    first = (proj / "out" / "app" / "flows.py").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# durable-generators {transpiler.__version__} (format ")
    assert header_of(proj / "out" / "app" / "plain.py").options == "default"  # every file of the package


def test_output_is_deterministic(proj: Path):
    invoke("compile", "app", "-o", "one", cwd=proj)
    invoke("compile", str(proj / "app"), "-o", "two", "--force", cwd=proj)
    for name in ("flows.py", "plain.py", "__init__.py"):
        assert (proj / "one" / "app" / name).read_bytes() == (proj / "two" / "app" / name).read_bytes()


def test_stdout_output_carries_the_header_too(proj: Path):
    result = invoke("compile", "app/flows.py", "--stdout", cwd=proj)
    assert result.exit_code == 0
    assert artifact.read_header(result.stdout) is not None
    assert "compiled 1 file" in result.stderr and "compiled" not in result.stdout.split("\n", 1)[1][:0]


def test_a_shebang_stays_first_and_a_coding_line_becomes_utf8(tmp_path: Path):
    source = "#!/usr/bin/env python\n# -*- coding: latin-1 -*-\n" + FLOWS + "NAME = 'caf\xe9'\n"
    (tmp_path / "script.py").write_bytes(source.encode("latin-1"))
    result = invoke("compile", "script.py", "-o", "out", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "script.py").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env python" and artifact.read_header(text) is not None
    assert "caf\xe9" in text and "latin-1" not in text


# ============================================================================ up to date, --check, --diff


def test_up_to_date_outputs_are_not_compiled_again(proj: Path, monkeypatch: pytest.MonkeyPatch):
    invoke("compile", "app", "-o", "out", cwd=proj)
    calls = []
    real = artifact.compile_file_text
    monkeypatch.setattr(artifact, "compile_file_text", lambda *a, **k: calls.append(a) or real(*a, **k))
    result = invoke("compile", "app", "-o", "out", cwd=proj)
    assert result.exit_code == 0 and calls == []
    assert "compiled 0 files, 3 up to date" in result.stderr
    result = invoke("compile", "app", "-o", "out", "--force", cwd=proj)
    assert len(calls) == 3 and "compiled 0 files, 3 up to date" in result.stderr  # same text: not rewritten


def test_check_exits_1_when_an_output_is_missing_or_stale_and_writes_nothing(proj: Path):
    result = invoke("compile", "app", "-o", "out", "--check", cwd=proj)
    assert result.exit_code == 1 and not (proj / "out").exists()
    assert "3 files would compile" in result.stderr
    invoke("compile", "app", "-o", "out", cwd=proj)
    assert invoke("compile", "app", "-o", "out", "--check", cwd=proj).exit_code == 0
    (proj / "app" / "flows.py").write_text(FLOWS + "\nEXTRA = 1\n", encoding="utf-8")
    before = (proj / "out" / "app" / "flows.py").read_text(encoding="utf-8")
    result = invoke("compile", "app", "-o", "out", "--check", cwd=proj)
    assert result.exit_code == 1 and "app/flows.py -> out/app/flows.py" in result.stderr.replace(os.sep, "/")
    assert (proj / "out" / "app" / "flows.py").read_text(encoding="utf-8") == before
    # another option or another compiler version makes an output stale too
    assert invoke("compile", "app", "-o", "out", "--check", "--all-generators", cwd=proj).exit_code == 1
    invoke("compile", "app", "-o", "out", cwd=proj)
    target = proj / "out" / "app" / "plain.py"
    target.write_text(target.read_text(encoding="utf-8").replace(transpiler.__version__, "0.0.1", 1), encoding="utf-8")
    assert invoke("compile", "app", "-o", "out", "--check", cwd=proj).exit_code == 1


def test_diff_prints_a_unified_diff_and_writes_nothing(proj: Path):
    result = invoke("compile", "app/flows.py", "-o", "out", "--diff", cwd=proj)
    assert result.exit_code == 0 and not (proj / "out").exists()
    assert result.stdout.startswith("--- /dev/null\n+++ out/flows.py\n".replace("/", os.sep) if os.sep != "/" else
                                    "--- /dev/null\n+++ out/flows.py\n")
    assert "+import runtime._support as _dg_rt" in result.stdout
    invoke("compile", "app/flows.py", "-o", "out", cwd=proj)
    (proj / "app" / "flows.py").write_text(FLOWS.replace("total = 0", "total = 100"), encoding="utf-8")
    result = invoke("compile", "app/flows.py", "-o", "out", "--diff", "--check", cwd=proj)
    assert result.exit_code == 1
    changed = [line for line in result.stdout.splitlines() if line.startswith(("+", "-"))
               and not line.startswith(("+++", "---"))]
    assert any("total = 100" in line for line in changed) and any("total = 0" in line for line in changed)
    # the header's hash and the declaration's fingerprint change with the code; nothing else does
    assert all("total" in line or "sha256" in line or "_dg_rt.declare(" in line for line in changed), changed


def test_in_place_compiles_once_and_leaves_files_without_durable_code_alone(proj: Path):
    result = invoke("compile", "app", "--in-place", cwd=proj)
    assert result.exit_code == 0, result.output
    assert artifact.is_compiled((proj / "app" / "flows.py").read_text(encoding="utf-8"))
    assert (proj / "app" / "plain.py").read_text(encoding="utf-8") == PLAIN
    compiled = (proj / "app" / "flows.py").read_text(encoding="utf-8")
    assert invoke("compile", "app", "--in-place", "--check", cwd=proj).exit_code == 0
    result = invoke("compile", "app", "--in-place", cwd=proj)
    assert result.exit_code == 0 and "compiled 0 files" in result.stderr
    assert (proj / "app" / "flows.py").read_text(encoding="utf-8") == compiled


def test_check_and_diff_refuse_stdout(proj: Path):
    result = invoke("compile", "app", "--stdout", "--check", cwd=proj)
    assert result.exit_code == 2 and "--check and --diff" in result.output


# ============================================================================ configuration


PYPROJECT = """
[project]
name = "app"

[tool.durable]
modules = ["app.flows"]
output-dir = "build/durable"
"""


def test_pyproject_configuration_names_modules_and_output_dir(proj: Path):
    (proj / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    result = invoke("compile", cwd=proj)
    assert result.exit_code == 0, result.output
    assert artifact.is_compiled((proj / "build" / "durable" / "app" / "flows.py").read_text(encoding="utf-8"))
    assert not (proj / "build" / "durable" / "app" / "plain.py").exists()
    assert invoke("compile", "--check", cwd=proj).exit_code == 0
    assert invoke("check", cwd=proj).exit_code == 0


def test_pyproject_all_generators_and_src_layout(tmp_path: Path):
    (tmp_path / "src" / "app").mkdir(parents=True)
    (tmp_path / "src" / "app" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "src" / "app" / "gens.py").write_text("def g():\n    yield 1\n", encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.durable]\nmodules = ["app"]\nall-generators = true\noutput-dir = "out"\n', encoding="utf-8")
    result = invoke("compile", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "app" / "gens.py").read_text(encoding="utf-8")
    assert header_of(tmp_path / "out" / "app" / "gens.py").options == "all-generators"
    assert "_dg_rt.compiled" in text


@pytest.mark.parametrize("table, message", [
    ('modules = "app"', "modules must be a list"),
    ('modules = ["nowhere.flows"]', "cannot find module 'nowhere.flows'"),
    ("all-generators = 1", "all-generators must be true or false"),
    ('colour = "blue"', "unknown key 'colour'"),
])
def test_bad_configuration_is_a_usage_error(proj: Path, table: str, message: str):
    (proj / "pyproject.toml").write_text(f'[tool.durable]\noutput-dir = "out"\n{table}\n', encoding="utf-8")
    result = invoke("compile", cwd=proj)
    assert result.exit_code == 2 and message in result.output, result.output


def test_no_paths_and_no_configured_modules_is_a_usage_error(tmp_path: Path):
    result = invoke("compile", "-o", "out", cwd=tmp_path)
    assert result.exit_code == 2 and "no PATHS given" in result.output


# ============================================================================ check, errors, progress


def test_check_reports_each_problem_and_a_summary(tmp_path: Path):
    (tmp_path / "bad.py").write_text(BAD, encoding="utf-8")
    (tmp_path / "good.py").write_text(FLOWS, encoding="utf-8")
    result = invoke("check", "bad.py", "good.py", cwd=tmp_path)
    assert result.exit_code == 3
    assert re.search(r"^bad\.py:5:1: error: DG004 @durable function 'not_a_generator' is not a generator",
                     result.stderr, re.M), result.stderr
    assert "checked 2 files: 1 problem in 1 file" in result.stderr
    assert result.stdout == ""


def test_an_internal_error_exits_123_with_a_request_to_report(proj: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(*args, **kwargs):
        raise RuntimeError("compiler bug")
    monkeypatch.setattr(artifact, "compile_file_text", broken)
    result = invoke("compile", "app/flows.py", "-o", "out", cwd=proj)
    assert result.exit_code == 123
    assert "internal error" in result.stderr and "compiler bug" in result.stderr and "report" in result.stderr


def test_progress_bar_only_on_a_terminal_with_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sources = [cli.batch.Source(tmp_path / f"m{i}.py", Path(f"m{i}.py")) for i in range(cli.PROGRESS_FROM)]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(cli._progress(sources, "compiling", enabled=True)) == sources
    assert "compiling" in terminal.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    assert list(cli._progress(sources[:-1], "compiling", enabled=True)) == sources[:-1]  # few files
    assert quiet.getvalue() == ""


def test_compile_without_libcst_says_how_to_install_it(proj: Path):
    code = ("import sys; sys.modules['libcst'] = None\n"
            "import importlib.util; real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name == 'libcst' else real(name, *a)\n"
            "from transpiler.cli import run; sys.argv = ['durable', 'compile', 'app', '-o', 'out']; run()")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(proj), env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'durable-generators[compiler]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_undecodable_file_is_reported_as_dg000(tmp_path: Path):
    (tmp_path / "latin.py").write_bytes(b"NAME = 'caf\xe9'\n")  # not UTF-8, no coding declaration
    result = invoke("check", "latin.py", cwd=tmp_path)
    assert result.exit_code == 3
    assert re.match(r"latin\.py:1:1: error: DG000 cannot read the file: cannot decode it: ", result.stderr)
    assert "hint:" in result.stderr
