"""The build step: wheels built with hatchling and setuptools ship compiled modules that run without libcst."""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from base64 import urlsafe_b64encode
from collections import Counter
from pathlib import Path

import pytest

from transpiler.artifact import compile_file_text, is_compiled, read_header
from transpiler.batch import BuildError, compile_for_build
from transpiler.build_hatch import DurableBuildError, _check_single_copies
from transpiler.config import load

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = Path(__file__).resolve().parent / "projects"
BACKENDS = {"hatch": "hatchling.build", "setuptools": "setuptools.build_meta"}
NOT_A_GENERATOR = "\n\n@durable\ndef not_a_generator():\n    return 1\n"
BROKEN_MODULE = {"hatch": "src/hatch_sample/flows.py", "setuptools": "st_sample/steps/collect.py"}
SAMPLE = {"hatch": "hatch_sample", "setuptools": "setuptools_sample"}
HOOK_TABLE = "[tool.hatch.build.targets.wheel.hooks.durable]"
# A module compiled before the build: the build must ship it byte for byte (never compile twice).
READY_SOURCE = '"""Compiled before the build."""\nfrom runtime import durable\n\n\n@durable\ndef ready(n):\n    yield n\n'


def run(args: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"{args} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def copy_project(name: str, dest: Path) -> Path:
    return Path(shutil.copytree(PROJECTS / name, dest, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                                     "*.egg-info")))


def pip_wheel(project: Path, out: Path, env: dict[str, str], *, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", project, "-w", out],
               env=env, check=check)


def only_wheel(folder: Path, prefix: str) -> Path:
    (wheel,) = folder.glob(f"{prefix}-*.whl")
    return wheel


def backend_hook(project: Path, backend: str, hook: str, out: Path, env: dict[str, str]) -> tuple[Path, str]:
    """Call a PEP 517 hook of ``project`` the way a frontend does, in a subprocess without isolation;
    return the artifact and everything the build printed."""
    out.mkdir(parents=True, exist_ok=True)
    code = f"import sys, {BACKENDS[backend]} as b; print(b.{hook}(sys.argv[1]))"
    done = run([sys.executable, "-c", code, out], cwd=project, env=env)
    return out / done.stdout.strip().splitlines()[-1], done.stdout + done.stderr


def wheel_texts(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# ---------------------------------------------------------------- fixtures (each builds once per module)

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build-step")


@pytest.fixture(scope="module")
def own_wheel(work: Path) -> Path:
    """durable-generators itself, built from this checkout."""
    pip_wheel(ROOT, work / "own", clean_env())
    return only_wheel(work / "own", "durable_generators")


@pytest.fixture(scope="module")
def build_env(work: Path, own_wheel: Path) -> dict[str, str]:
    """This interpreter (hatchling, setuptools, libcst) with our wheel on PYTHONPATH: the hatch plugin
    is found through the wheel's entry point, and setup.py imports the build_py command from it."""
    target = work / "plugin"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, own_wheel],
        env=clean_env())
    return {**clean_env(), "PYTHONPATH": str(target)}


@pytest.fixture(scope="module")
def hatch_wheel(work: Path, build_env: dict[str, str]) -> Path:
    project = copy_project("hatch_sample", work / "src-hatch")
    pip_wheel(project, work / "wheels", build_env)
    return only_wheel(work / "wheels", "hatch_sample")


@pytest.fixture(scope="module")
def setuptools_project(work: Path) -> Path:
    project = copy_project("setuptools_sample", work / "src-setuptools")
    ready = compile_file_text(READY_SOURCE.encode(), "ready.py")
    (project / "st_sample" / "ready.py").write_text(ready, encoding="utf-8")
    return project


@pytest.fixture(scope="module")
def setuptools_wheel(work: Path, build_env: dict[str, str], setuptools_project: Path) -> Path:
    pip_wheel(setuptools_project, work / "wheels", build_env)
    return only_wheel(work / "wheels", "setuptools_sample")


@pytest.fixture(scope="module")
def setup_py_wheel(work: Path, build_env: dict[str, str]) -> Path:
    project = copy_project("setuptools_setup_py", work / "src-setup-py")
    pip_wheel(project, work / "wheels", build_env)
    return only_wheel(work / "wheels", "legacy_sample")


@pytest.fixture(scope="module")
def broken(work: Path) -> dict[str, Path]:
    """Each sample with a DG004 error added to a configured module. The hatch copy enables the hook for
    every target ([tool.hatch.build.hooks.durable]), so the hook itself must leave sdists alone."""
    projects = {}
    for backend, name in SAMPLE.items():
        project = copy_project(name, work / f"broken-{backend}")
        with open(project / BROKEN_MODULE[backend], "a", encoding="utf-8") as fh:
            fh.write(NOT_A_GENERATOR)
        projects[backend] = project
    pyproject = projects["hatch"] / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    assert HOOK_TABLE in text
    pyproject.write_text(text.replace(HOOK_TABLE, "[tool.hatch.build.hooks.durable]"), encoding="utf-8")
    return projects


@pytest.fixture(scope="module")
def fresh_venv(work: Path, own_wheel: Path, hatch_wheel: Path, setuptools_wheel: Path, setup_py_wheel: Path) -> Path:
    """A new virtual environment with the four wheels installed and no libcst: what production has."""
    folder = work / "venv"
    venv.EnvBuilder(with_pip=False).create(folder)  # stdlib: a failure here is a real failure
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", own_wheel, hatch_wheel,
         setuptools_wheel, setup_py_wheel], env=clean_env())
    return python


# ---------------------------------------------------------------- what the wheels contain

def test_hatch_wheel_ships_the_configured_module_compiled(hatch_wheel: Path) -> None:
    files = wheel_texts(hatch_wheel)
    source = PROJECTS / "hatch_sample" / "src" / "hatch_sample"
    flows = files["hatch_sample/flows.py"].decode()
    header = read_header(flows)
    assert header is not None, flows[:300]
    assert header.name == "flows.py"
    assert header.digest == hashlib.sha256((source / "flows.py").read_bytes()).hexdigest()
    # The hook table's all-generators = true overrides [tool.durable].
    assert header.options == "all-generators"
    for plain in ("__init__.py", "helpers.py"):
        assert files[f"hatch_sample/{plain}"] == (source / plain).read_bytes()


def test_setuptools_wheel_ships_the_configured_package_compiled(setuptools_wheel: Path,
                                                                 setuptools_project: Path) -> None:
    files = wheel_texts(setuptools_wheel)
    for module in ("__init__.py", "flows.py", "steps/__init__.py", "steps/collect.py"):
        text = files[f"st_sample/{module}"].decode()
        assert is_compiled(text), module
        assert read_header(text).digest == hashlib.sha256(  # type: ignore[union-attr]
            (setuptools_project / "st_sample" / module).read_bytes()).hexdigest()
    assert files["st_plain.py"] == (PROJECTS / "setuptools_sample" / "st_plain.py").read_bytes()
    assert files["st_sample/ready.py"] == (setuptools_project / "st_sample" / "ready.py").read_bytes()


def test_setup_py_cmdclass_ships_the_module_compiled(setup_py_wheel: Path) -> None:
    files = wheel_texts(setup_py_wheel)
    assert is_compiled(files["legacy_sample/flows.py"].decode())
    assert not is_compiled(files["legacy_sample/__init__.py"].decode())


@pytest.mark.parametrize("which", ["hatch_wheel", "setuptools_wheel", "setup_py_wheel"])
def test_wheel_holds_one_copy_of_each_file(which: str, request: pytest.FixtureRequest) -> None:
    wheel: Path = request.getfixturevalue(which)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        record = list(csv.reader(io.StringIO(archive.read(record_name).decode())))
        assert [n for n, count in Counter(names).items() if count > 1] == []
        listed = [row[0] for row in record]
        assert sorted(listed) == sorted(names)
        for path, digest, _size in record:
            if path != record_name:
                expected = urlsafe_b64encode(hashlib.sha256(archive.read(path)).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={expected}", path


# ---------------------------------------------------------------- running the wheels without the compiler

FIRST_PROCESS = """
import json, sys, traceback
result = {}
try:
    import libcst
except ImportError:
    result["libcst"] = "missing"
else:
    result["libcst"] = libcst.__file__
import runtime
from hatch_sample import flows
from st_sample.flows import pipeline
from legacy_sample.flows import countdown

result["flows_header"] = open(flows.__file__, encoding="utf-8").readline()[:40]

g = flows.running_total(3)
steps = [next(g), g.send(10)]
data = runtime.snapshot(g)
open(sys.argv[1] + "/total.bin", "wb").write(data)
runtime.detach(g)
g2 = runtime.restore(data)
steps.append(g2.send(5))
try:
    g2.send(1)
except StopIteration as stop:
    steps.append(stop.value)
result["running_total"] = steps

p = pipeline(["a", "b"])
steps = [next(p), p.send(1)]
data = runtime.snapshot(p)
open(sys.argv[1] + "/pipeline.bin", "wb").write(data)
runtime.detach(p)
p2 = runtime.restore(data)
steps.append(p2.send(2))
try:
    next(p2)
except StopIteration as stop:
    steps.append(repr(stop.value))
result["pipeline"] = steps

c = countdown(3)
first = next(c)
c2 = runtime.restore(runtime.snapshot(c))
runtime.detach(c)
result["countdown"] = [first, *c2]

f = flows.fails_after_one()
next(f)
try:
    next(f)
except ValueError as exc:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    result["traceback"] = [frame.name, frame.line]
print(json.dumps(result))
"""

SECOND_PROCESS = """
import json, sys
import runtime
runtime.allow_modules("hatch_sample", "st_sample")
folder = sys.argv[1]
g = runtime.restore(open(folder + "/total.bin", "rb").read())
p = runtime.restore(open(folder + "/pipeline.bin", "rb").read())
result = {"running_total": [g.send(5)], "pipeline": [p.send(2)]}
try:
    g.send(1)
except StopIteration as stop:
    result["running_total"].append(stop.value)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def first_run(work: Path, fresh_venv: Path) -> dict[str, object]:
    done = run([fresh_venv, "-c", FIRST_PROCESS, work], env=clean_env())
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_fresh_venv_has_no_libcst(first_run: dict[str, object]) -> None:
    assert first_run["libcst"] == "missing"
    assert first_run["flows_header"].startswith("# durable-generators ")  # type: ignore[attr-defined]


NATIVE = """
import json, sys
import runtime
runtime.durable = lambda fn: fn  # the samples' sources, run as plain generators
from hatch_sample import flows
from st_sample.flows import pipeline
from legacy_sample.flows import countdown

def drive(gen, first, sends):
    out = [first(gen)]
    try:
        for value in sends:
            out.append(gen.send(value))
    except StopIteration as stop:
        out.append(stop.value)
    return out

result = {"running_total": drive(flows.running_total(3), next, [10, 5, 1])}
p = pipeline(["a", "b"])
steps = drive(p, next, [1, 2, None])
result["pipeline"] = steps[:-1] + [repr(steps[-1])]
result["countdown"] = list(countdown(3))
print(json.dumps(result))
"""


def test_installed_generators_snapshot_and_restore(first_run: dict[str, object]) -> None:
    """The installed, compiled generators, snapshotted and restored mid-way, give what the samples'
    sources give when run natively without interruption."""
    sources = [PROJECTS / "hatch_sample" / "src", PROJECTS / "setuptools_sample", PROJECTS / "setuptools_setup_py"]
    env = dict(clean_env(), PYTHONPATH=os.pathsep.join([*map(str, sources), str(ROOT)]))
    native = json.loads(run([sys.executable, "-c", NATIVE], env=env).stdout)
    for name in ("running_total", "pipeline", "countdown"):
        assert first_run[name] == native[name], name


def test_snapshot_restores_in_a_second_process(work: Path, fresh_venv: Path, first_run: dict[str, object]) -> None:
    done = run([fresh_venv, "-c", SECOND_PROCESS, work], env=clean_env())
    assert json.loads(done.stdout) == {"running_total": [15, 32], "pipeline": ["collected 2"]}


def test_traceback_line_names_the_original_line(first_run: dict[str, object]) -> None:
    source = (PROJECTS / "hatch_sample" / "src" / "hatch_sample" / "flows.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "raise ValueError" in text)
    name, text = first_run["traceback"]  # type: ignore[misc]
    assert name == "fails_after_one"
    assert text.startswith("raise ValueError(") and text.endswith(f"# dg@{line}"), text


# ---------------------------------------------------------------- sdist, editable installs, errors

@pytest.mark.parametrize("backend", ["hatch", "setuptools"])
def test_sdist_is_the_unchanged_source(work: Path, build_env: dict[str, str], broken: dict[str, Path],
                                       backend: str) -> None:
    project = broken[backend]
    sdist, _ = backend_hook(project, backend, "build_sdist", work / f"sdist-{backend}", build_env)
    with tarfile.open(sdist) as archive:
        shipped = {m.name.split("/", 1)[1]: archive.extractfile(m).read()  # type: ignore[union-attr]
                   for m in archive.getmembers() if m.name.endswith(".py")}
    assert BROKEN_MODULE[backend] in shipped
    assert shipped == {name: (project / name).read_bytes() for name in shipped}


@pytest.mark.parametrize("backend", ["hatch", "setuptools"])
def test_editable_build_does_not_compile(work: Path, build_env: dict[str, str], broken: dict[str, Path],
                                         backend: str) -> None:
    project = broken[backend]
    before = {p: p.read_bytes() for p in project.rglob("*.py")}
    wheel, output = backend_hook(project, backend, "build_editable", work / f"editable-{backend}", build_env)
    compiled = [name for name, data in wheel_texts(wheel).items() if b"# durable-generators " in data]
    assert compiled == []
    # setuptools turns a failing build_py into a warning in editable mode: the error must not even occur.
    assert "DG004" not in output, output
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("backend", ["hatch", "setuptools"])
def test_compile_error_fails_the_build_with_the_diagnostic(work: Path, build_env: dict[str, str],
                                                           broken: dict[str, Path], backend: str) -> None:
    project = broken[backend]
    done = pip_wheel(project, work / f"failed-{backend}", build_env, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    line = (project / BROKEN_MODULE[backend]).read_text().splitlines().index("def not_a_generator():") + 1
    assert (f"{BROKEN_MODULE[backend]}:{line}:1: error: DG004 @durable function 'not_a_generator' "
            "is not a generator function") in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("backend, edits, message", [
    pytest.param("hatch", [(HOOK_TABLE, f'{HOOK_TABLE}\nmodules = ["hatch_sample.nowhere"]')],
                 "cannot find module 'hatch_sample.nowhere'", id="hatch-hook-modules"),
    pytest.param("hatch", [("all-generators = true", 'all-generators = "yes"')],
                 f"{HOOK_TABLE} all-generators must be true or false", id="hatch-hook-all-generators"),
    pytest.param("setuptools", [('modules = ["st_sample"]', 'modules = ["st_sample", "st_missing"]')],
                 "cannot find module 'st_missing'", id="setuptools-modules"),
    pytest.param("setuptools", [('modules = ["st_sample"]', 'modules = ["st_plain"]'),
                                ('py-modules = ["st_plain"]', "py-modules = []")],
                 "st_plain.py: configured in [tool.durable] but not part of the wheel", id="setuptools-not-built"),
])
def test_configuration_error_fails_the_build(tmp_path: Path, build_env: dict[str, str], backend: str,
                                             edits: list[tuple[str, str]], message: str) -> None:
    project = copy_project(SAMPLE[backend], tmp_path / "project")
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    pyproject.write_text(text, encoding="utf-8")
    code = f"import sys, {BACKENDS[backend]} as b; b.build_wheel(sys.argv[1])"
    done = run([sys.executable, "-c", code, tmp_path / "out"], cwd=project, env=build_env, check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_build_without_libcst_says_which_extra_to_require(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = copy_project("hatch_sample", tmp_path / "project")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "libcst" else real_find_spec(name, *args))
    with pytest.raises(BuildError, match=r"durable-generators\[compiler\]"):
        compile_for_build(load(project / "pyproject.toml"))



def test_build_reports_every_problem_of_every_file(tmp_path: Path) -> None:
    project = copy_project("setuptools_sample", tmp_path / "project")
    with open(project / "st_sample" / "flows.py", "a", encoding="utf-8") as fh:
        fh.write(NOT_A_GENERATOR)
    (project / "st_sample" / "steps" / "collect.py").write_bytes(b"x = '\xff'\n")
    with pytest.raises(BuildError) as failure:
        compile_for_build(load(project / "pyproject.toml"))
    lines = str(failure.value).splitlines()
    assert any(line.startswith("st_sample/flows.py:") and "DG004" in line for line in lines), lines
    assert any(line.startswith("st_sample/steps/collect.py:1:1: error: DG000 cannot read the file: cannot decode")
               for line in lines), lines

def test_hatch_hook_refuses_a_wheel_with_two_copies(tmp_path: Path) -> None:
    wheel = tmp_path / "twice-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/flows.py", "source")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("pkg/flows.py", "compiled")
    with pytest.raises(DurableBuildError, match="pkg/flows.py"):
        _check_single_copies(str(wheel))
    assert not wheel.exists()


def test_sample_sources_are_not_compiled() -> None:
    """The samples must stay plain source, or the tests above would prove nothing."""
    for path in PROJECTS.rglob("*.py"):
        assert not is_compiled(path.read_text(encoding="utf-8")), path

