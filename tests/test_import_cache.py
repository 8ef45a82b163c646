"""The import hook's cache and module handling (README: "Import hook").

Compiled code is cached in ``__pycache__`` as ``NAME.TAG.durable-VERSION-OPTIONS.pyc``, keyed by the
source's hash, the compiler version and the options; written atomically; ``sys.dont_write_bytecode``
and ``sys.pycache_prefix`` are honoured; a cache that cannot be read or written never breaks an
import; a warm import does not import libcst. Each scenario runs in a fresh interpreter, so that what
is imported (libcst or not) is observable.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOWS = textwrap.dedent('''
    """Flows for the cache tests."""
    from runtime import durable


    @durable
    def counter(n):
        total = 0
        for i in range(n):
            total += yield i * FACTOR
        return total


    FACTOR = 2
''').lstrip()

# Imports flows through the hook, drives a generator across a snapshot/restore, and reports whether
# the compiler was loaded and whether the generator really is durable.
USE = '''
import sys
from transpiler import install_import_hook
install_import_hook({modules!r}, all_generators={all_generators!r})
import runtime
import {module} as flows
gen = flows.counter(3)
values = [next(gen), gen.send(1)]
later = runtime.restore(runtime.snapshot(gen))
runtime.detach(gen)
values.append(later.send(2))
try:
    later.send(3)
except StopIteration as stop:
    values.append(stop.value)
print(values, "libcst" in sys.modules)
'''


def run(code: str, cwd: Path, *, extra_env: dict[str, str] | None = None, args: list[str] | None = None
        ) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT)]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    env.update(extra_env or {})
    command = [sys.executable, *(args or ["-c", code])]
    return subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=120)


def use(cwd: Path, module: str = "flows", *, hooked: str | None = None, all_generators: bool = False, **kw
        ) -> tuple[str, bool]:
    proc = run(USE.format(modules=[hooked or module], module=module, all_generators=all_generators), cwd, **kw)
    assert proc.returncode == 0, proc.stderr
    values, loaded = proc.stdout.strip().rsplit(" ", 1)
    return values, loaded == "True"


def durable_caches(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.durable-*.pyc"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(FLOWS, encoding="utf-8")
    return tmp_path


def test_cold_import_writes_the_cache_and_a_warm_import_skips_the_compiler(project: Path):
    assert use(project) == ("[0, 2, 4, 6]", True)
    caches = durable_caches(project)
    tag = sys.implementation.cache_tag
    assert [c.relative_to(project).as_posix() for c in caches] == \
        [f"__pycache__/flows.{tag}.durable-{__import__('transpiler').__version__}-default.pyc"]
    assert use(project) == ("[0, 2, 4, 6]", False)  # warm: libcst never imported
    assert not list(project.rglob("*.tmp")), "temporary files left behind"


def test_a_changed_source_is_compiled_again(project: Path):
    use(project)
    (project / "flows.py").write_text(FLOWS.replace("FACTOR = 2", "FACTOR = 10"), encoding="utf-8")
    assert use(project) == ("[0, 10, 20, 6]", True)
    assert use(project) == ("[0, 10, 20, 6]", False)


def test_options_have_their_own_cache_entry(project: Path):
    use(project)
    assert use(project, all_generators=True) == ("[0, 2, 4, 6]", True)
    names = [c.name for c in durable_caches(project)]
    assert len(names) == 2 and any(n.endswith("-all-generators.pyc") for n in names), names
    assert use(project)[1] is False and use(project, all_generators=True)[1] is False


def test_dont_write_bytecode_writes_no_cache(project: Path):
    assert use(project, extra_env={"PYTHONDONTWRITEBYTECODE": "1"}) == ("[0, 2, 4, 6]", True)
    assert durable_caches(project) == []
    assert use(project, extra_env={"PYTHONDONTWRITEBYTECODE": "1"})[1] is True


def test_pycache_prefix_is_honoured(project: Path, tmp_path_factory: pytest.TempPathFactory):
    prefix = tmp_path_factory.mktemp("prefix")
    assert use(project, extra_env={"PYTHONPYCACHEPREFIX": str(prefix)})[1] is True
    assert durable_caches(project) == []
    assert len(durable_caches(prefix)) == 1
    assert use(project, extra_env={"PYTHONPYCACHEPREFIX": str(prefix)})[1] is False


def test_a_cache_directory_that_cannot_be_written_does_not_break_the_import(project: Path):
    (project / "__pycache__").write_text("a file where the cache directory should be", encoding="utf-8")
    assert use(project) == ("[0, 2, 4, 6]", True)
    assert use(project) == ("[0, 2, 4, 6]", True)  # still importable, compiled every time


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other key"])
def test_a_damaged_cache_entry_is_replaced(project: Path, damage: str):
    use(project)
    [entry] = durable_caches(project)
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\x00not a cache entry at all")
    elif damage == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    else:
        entry.write_bytes(data[:4] + bytes(48) + data[52:])  # another compiler and source
    assert use(project) == ("[0, 2, 4, 6]", True)
    assert use(project)[1] is False


def test_files_compiled_by_the_cli_are_left_alone(project: Path):
    from transpiler.artifact import compile_file_text

    path = project / "flows.py"
    path.write_text(compile_file_text(path.read_bytes(), str(path)), encoding="utf-8")
    assert use(project) == ("[0, 2, 4, 6]", False)  # durable, yet the compiler never ran
    assert durable_caches(project) == []


def test_warns_about_a_module_imported_before_the_hook(project: Path):
    proc = run("import flows\nfrom transpiler import install_import_hook\ninstall_import_hook(['flows'])\n",
               project, extra_env={"PYTHONWARNINGS": "always"})
    assert proc.returncode == 0, proc.stderr
    assert "DurableImportWarning" in proc.stderr and "'flows' was imported before" in proc.stderr


def test_no_warning_about_a_module_another_hook_compiled(project: Path):
    proc = run("from transpiler import install_import_hook\ninstall_import_hook(['flows'])\nimport flows\n"
               "install_import_hook(['flows'])\n", project, extra_env={"PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr


def package(root: Path, name: str, init: str = "") -> Path:
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(init, encoding="utf-8")
    (pkg / "flows.py").write_text(FLOWS, encoding="utf-8")
    return pkg


SELF_INSTALLING = "from transpiler import install_import_hook\ninstall_import_hook(__name__)\n"


def test_a_package_turns_the_hook_on_for_itself(tmp_path: Path):
    package(tmp_path, "selfpkg", SELF_INSTALLING)
    proc = run(USE.replace("install_import_hook({modules!r}, all_generators={all_generators!r})", "")
               .format(module="selfpkg.flows"), tmp_path, extra_env={"PYTHONWARNINGS": "error"})
    assert proc.returncode == 0, proc.stderr  # and no warning about the package itself
    assert proc.stdout.split()[:4] == ["[0,", "2,", "4,", "6]"]


def test_namespace_packages(tmp_path: Path):
    (tmp_path / "nspkg").mkdir()
    (tmp_path / "nspkg" / "flows.py").write_text(FLOWS, encoding="utf-8")
    assert use(tmp_path, "nspkg.flows")[0] == "[0, 2, 4, 6]"
    assert use(tmp_path, "nspkg.flows", hooked="nspkg")[0] == "[0, 2, 4, 6]"  # the namespace package covers its modules


def test_python_dash_m_runs_the_compiled_module(tmp_path: Path):
    pkg = package(tmp_path, "mpkg", SELF_INSTALLING)
    (pkg / "flows.py").write_text(FLOWS + textwrap.dedent('''

        if __name__ == "__main__":
            import runtime
            gen = counter(3)
            next(gen)
            print("durable", len(runtime.snapshot(gen)) > 0)
    '''), encoding="utf-8")
    proc = run("", tmp_path, args=["-m", "mpkg.flows"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "durable True"


def test_modules_outside_the_hook_are_not_cached(project: Path):
    (project / "other.py").write_text(FLOWS, encoding="utf-8")
    proc = run("from transpiler import install_import_hook\ninstall_import_hook(['flows'])\nimport other\n", project)
    assert proc.returncode == 0, proc.stderr
    assert durable_caches(project) == []


def test_cache_path_follows_cache_from_source():
    from transpiler import cache

    plain = importlib.util.cache_from_source("/x/pkg/mod.py")
    assert cache.cache_path("/x/pkg/mod.py", "default") == plain[:-4] + \
        f".durable-{__import__('transpiler').__version__}-default.pyc"
