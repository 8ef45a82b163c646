"""Differential test harness for durable generators and coroutines.

A *program* is Python source (usually defining ``gen``, helpers and a module-level ``LOG = []``).
It is loaded twice as real, importable modules in a temporary directory on ``sys.path``:

* natively (the unchanged source), and
* compiled (``compile_source(source, path, all_generators=True)``).

Both sides are driven by the same *script* of operations (``NEXT``, ``send(v)``, ``throw(e)``,
``CLOSE``, ``exec_(code)``, optionally wrapped in ``in_handler(op, exc)``).  Every step records the
outcome (yielded value, return value, raised exception with its ``__context__``/``__cause__``
chain, close() result), whether the generator is finished, and what the step appended to ``LOG``.
On the compiled side the generator is snapshotted, detached and restored before the first step and
after every step while it is suspended.  Once per test (by default at a middle step) the snapshot
is restored in a fresh interpreter which runs the rest of the script; its trace must equal the
native remainder.

Values in a script are given as literals, exception classes, exception instances or zero-argument
factories (called once, turned into a class + literal args), or ``Expr("code")`` evaluated in the
program's module namespace (so a program-defined class can be named).  Each side (and the fresh
process) builds its own fresh value from that description.

Before each step the harness binds the module global ``CURRENT_GEN`` to the generator being
driven, so a program can refer to "itself" (for example to call ``next()`` on itself).

Coroutines: when ``entry`` makes a coroutine (``async def main(): ...``), the same script drives it as a
coroutine: ``NEXT`` is ``send(None)``, ``throw``/``CLOSE`` are ``coro.throw``/``coro.close()``, and it is
finished when ``cr_frame`` is None. A durable suspension in an async program is
``await suspend(value)`` (``runtime.programs.requests.suspend``, a plain awaitable natively): the step
that reaches it records ``value`` as yielded, and the next ``send(x)`` makes the await return ``x``.
Restore must give back a coroutine for a coroutine (and a generator for a generator).

Self-check: ``mode="native-vs-native"`` (or env ``DG_HARNESS_MODE=native-vs-native``) loads the
unmodified source on both sides, skips snapshots, and makes the fresh process replay the prefix.
"""
from __future__ import annotations

import ast
import atexit
import builtins
import contextlib
import dataclasses
import gc
import importlib
import importlib.util
import inspect
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent

COMPILED = "compiled"
NATIVE_VS_NATIVE = "native-vs-native"

_TMPDIR: Path | None = None
_counter = itertools.count()
_TRACE_MARK = "@@DG-TRACE@@"


# --------------------------------------------------------------------------- module loading

def tmp_module_dir() -> Path:
    """The session's temporary directory holding program modules (created on first use, on sys.path)."""
    global _TMPDIR
    if _TMPDIR is None:
        _TMPDIR = Path(tempfile.mkdtemp(prefix="dg_programs_"))
        sys.path.insert(0, str(_TMPDIR))
        atexit.register(shutil.rmtree, str(_TMPDIR), True)
    return _TMPDIR


def unique_module_name(tag: str = "prog") -> str:
    return f"dgprog_{os.getpid()}_{next(_counter)}_{tag}"


def _import_file(name: str, text: str, directory: Path | None = None) -> types.ModuleType:
    directory = directory or tmp_module_dir()
    path = directory / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    importlib.invalidate_caches()
    sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


_DURABLE_IMPORT = re.compile(r"^(\s*)from runtime import durable\s*$", re.M)


def native_source(source: str) -> str:
    """The source to run natively: the user's, with ``from runtime import durable`` made a no-op.

    (Natively an uncompiled ``@durable`` function must behave as the plain generator it is.)
    """
    return _DURABLE_IMPORT.sub(lambda m: f"{m.group(1)}durable = lambda f: f  # native run", source)


def load_native(source: str, tag: str = "native") -> types.ModuleType:
    """Import the unchanged ``source`` as a real module from a file (a unique name)."""
    source = textwrap.dedent(source)
    return _import_file(unique_module_name(tag), native_source(source))


def load_compiled(source: str, *, all_generators: bool = True, tag: str = "compiled",
                  name: str | None = None, directory: Path | None = None) -> types.ModuleType:
    """Compile ``source`` with ``compile_source`` and import the result as a real module.

    The module file lives in :func:`tmp_module_dir` (or ``directory``) under a unique (or the given)
    name, so a fresh process with that directory on PYTHONPATH can import it by name.
    """
    from transpiler import compile_source

    source = textwrap.dedent(source)
    name = name or unique_module_name(tag)
    directory = directory or tmp_module_dir()
    path = directory / f"{name}.py"
    compiled = compile_source(source, str(path), all_generators=all_generators)
    return _import_file(name, compiled, directory)


def unload(module: types.ModuleType) -> None:
    sys.modules.pop(module.__name__, None)


@contextlib.contextmanager
def native_and_hooked(folder: Path, stem: str, source: str, native_source: str | None = None
                      ) -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """``source`` imported twice from files in ``folder``, by their real names: natively as ``STEM_native``
    (``native_source`` when given) and compiled by the import hook as ``STEM_flows``, without bytecode
    files; ``folder`` leaves sys.path and both modules are forgotten on exit."""
    native_name, compiled_name = f"{stem}_native", f"{stem}_flows"
    (folder / f"{native_name}.py").write_text(source if native_source is None else native_source, encoding="utf-8")
    (folder / f"{compiled_name}.py").write_text(source, encoding="utf-8")
    sys.path.insert(0, str(folder))
    writing, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    importlib.invalidate_caches()
    try:
        from transpiler import install_import_hook

        with install_import_hook([compiled_name]):
            compiled = importlib.import_module(compiled_name)
        yield importlib.import_module(native_name), compiled
    finally:
        for name in (native_name, compiled_name):
            sys.modules.pop(name, None)
        sys.path.remove(str(folder))
        sys.dont_write_bytecode = writing


# --------------------------------------------------------------------------- script operations

@dataclasses.dataclass(frozen=True)
class Expr:
    """A value given as source code, evaluated in the program module's namespace on each side."""
    code: str


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str                 # "next" | "send" | "throw" | "close" | "exec"
    arg: Any = None
    handler: Any = None       # exception being handled by the caller while the step runs

    def label(self) -> str:
        if self.kind in ("next", "close"):
            text = f"{self.kind}()"
        elif self.kind == "exec":
            text = f"exec({self.arg!r})"
        else:
            text = f"{self.kind}({_arg_label(self.arg)})"
        if self.handler is not None:
            text += f" [handling {_arg_label(self.handler)}]"
        return text


def _arg_label(arg: Any) -> str:
    if isinstance(arg, dict):  # an encoded value spec
        if "lit" in arg:
            return arg["lit"]
        if "float" in arg:
            return arg["float"]
        if "expr" in arg:
            return arg["expr"]
        if "class" in arg:
            return arg["class"][1]
        if "exc" in arg:
            return f"{arg['exc'][1]}({', '.join(_arg_label(a) for a in arg['args'])})"
    if isinstance(arg, Expr):
        return arg.code
    if isinstance(arg, type):
        return arg.__qualname__
    if callable(arg) and not isinstance(arg, BaseException):
        return getattr(arg, "__name__", "factory")
    return repr(arg)


NEXT = Op("next")
CLOSE = Op("close")


def send(value: Any) -> Op:
    return Op("send", value)


def throw(exc: Any) -> Op:
    """Throw an exception: a class, an instance (copied per side), a factory, or Expr/str code."""
    if isinstance(exc, str):
        exc = Expr(exc)
    return Op("throw", exc)


def exec_(code: str) -> Op:
    """Run ``code`` in the program module's namespace on each side (e.g. rebind a global)."""
    return Op("exec", textwrap.dedent(code))


def in_handler(op: Op, exc: Any) -> Op:
    """Run ``op`` while the caller is handling ``exc`` (inside an ``except`` block)."""
    if isinstance(exc, str):
        exc = Expr(exc)
    return dataclasses.replace(op, handler=exc)


def nexts(n: int) -> list[Op]:
    return [NEXT] * n


def drive(gen: Any, inputs: list[Any]) -> list[Any]:
    """What ``gen`` yields for each input in turn (sent; an exception instance is thrown in), ending with
    ``("return", value)`` when it returns."""
    out: list[Any] = []
    for value in inputs:
        try:
            out.append(gen.throw(value) if isinstance(value, BaseException) else gen.send(value))
        except StopIteration as stop:
            out.append(("return", stop.value))
            break
    return out


# --------------------------------------------------------------------------- value specs

def encode_value(v: Any) -> dict:
    """A JSON description of a script value from which each side builds its own fresh copy."""
    if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("lit", "float", "expr", "class"):
        return v
    if isinstance(v, Expr):
        return {"expr": v.code}
    if isinstance(v, type) and issubclass(v, BaseException):
        return {"class": [v.__module__, v.__qualname__]}
    if isinstance(v, BaseException):
        return {"exc": [type(v).__module__, type(v).__qualname__],
                "args": [encode_value(a) for a in v.args]}
    if isinstance(v, float) and not math.isfinite(v):
        return {"float": repr(v)}
    if callable(v):
        return encode_value(v())
    text = repr(v)
    try:
        ok = ast.literal_eval(text) == v
    except Exception:
        ok = False
    if not ok:
        raise TypeError(f"script value {v!r} cannot be described; use a literal or Expr('...')")
    return {"lit": text}


def _resolve_class(modname: str, qualname: str) -> Any:
    obj: Any = builtins if modname == "builtins" else importlib.import_module(modname)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_value(spec: dict, namespace: dict) -> Any:
    if "lit" in spec:
        return ast.literal_eval(spec["lit"])
    if "float" in spec:
        return float(spec["float"])
    if "expr" in spec:
        return eval(spec["expr"], namespace)
    if "class" in spec:
        return _resolve_class(*spec["class"])
    if "exc" in spec:
        cls = _resolve_class(*spec["exc"])
        return cls(*[resolve_value(a, namespace) for a in spec["args"]])
    raise ValueError(f"bad value spec {spec!r}")


def encode_op(op: Op) -> dict:
    arg = None
    if op.kind in ("send", "throw"):
        arg = encode_value(op.arg)
    elif op.kind == "exec":
        arg = op.arg
    return {"kind": op.kind, "arg": arg,
            "handler": None if op.handler is None else encode_value(op.handler)}


def op_label(enc: dict) -> str:
    return Op(enc["kind"], enc["arg"], enc["handler"]).label()


# --------------------------------------------------------------------------- normalisation

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_MODNAME = re.compile(r"dgprog_\d+_\d+_\w+?(?=[.'\"\s>:)]|$)")


def _clean(text: str) -> str:
    return _MODNAME.sub("<prog>", _ADDR.sub("", text))


def norm(v: Any, _seen: frozenset = frozenset()) -> str:
    """A canonical string for a value: stable across processes/modules, nan-safe, cycle-safe."""
    if v is None or isinstance(v, (bool, int, str, bytes)):
        return repr(v)
    if isinstance(v, float):
        return repr(v)  # 'nan' == 'nan' as strings
    if id(v) in _seen:
        return "<cycle>"
    seen = _seen | {id(v)}
    if isinstance(v, list):
        return "[" + ", ".join(norm(x, seen) for x in v) + "]"
    if isinstance(v, tuple):
        inner = ", ".join(norm(x, seen) for x in v)
        return "(" + inner + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{norm(k, seen)}: {norm(x, seen)}" for k, x in v.items()) + "}"
    if isinstance(v, (set, frozenset)):
        return f"{type(v).__name__}({{" + ", ".join(sorted(norm(x, seen) for x in v)) + "})"
    if isinstance(v, BaseException):
        return f"{exc_type_name(v)}{norm(v.args, seen)}"
    return _clean(repr(v))


def exc_type_name(e: BaseException) -> str:
    cls = type(e)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return _clean(f"{cls.__module__}.{cls.__qualname__}")


def describe_exc(e: BaseException | None, _depth: int = 0, _seen: frozenset = frozenset()) -> Any:
    if e is None:
        return None
    if id(e) in _seen or _depth > 12:
        return "<chain cycle>"
    seen = _seen | {id(e)}
    return {
        "type": exc_type_name(e),
        "args": norm(e.args),
        "context": describe_exc(e.__context__, _depth + 1, seen),
        "cause": describe_exc(e.__cause__, _depth + 1, seen),
        "suppress_context": bool(e.__suppress_context__),
    }


def _fmt_exc(d: Any) -> str:
    if not isinstance(d, dict):
        return str(d)
    text = f"{d['type']}{d['args']}"
    if d["cause"] is not None:
        text += f" <cause {_fmt_exc(d['cause'])}>"
    if d["context"] is not None:
        text += f" <context {_fmt_exc(d['context'])}>"
    if d["suppress_context"]:
        text += " <suppress_context>"
    return text


# --------------------------------------------------------------------------- driving a generator or coroutine

def is_coroutine(runner: Any) -> bool:
    """Whether the harness drives ``runner`` as a coroutine (else as a generator)."""
    return isinstance(runner, types.CoroutineType)


def runner_kind(runner: Any) -> str:
    if is_coroutine(runner):
        return "coroutine"
    return "generator" if inspect.isgenerator(runner) else type(runner).__name__


def _gen_finished(gen: Any) -> bool:
    """Whether the generator or coroutine ``gen`` has finished (or was closed)."""
    if is_coroutine(gen):
        return gen.cr_frame is None
    try:
        return inspect.getgeneratorstate(gen) == inspect.GEN_CLOSED
    except Exception:
        return getattr(gen, "gi_frame", None) is None


def _log_len(namespace: dict) -> int:
    log = namespace.get("LOG")
    return len(log) if isinstance(log, list) else 0


def _log_delta(namespace: dict, start: int) -> list[str]:
    log = namespace.get("LOG")
    if not isinstance(log, list):
        return []
    return [norm(x) for x in log[start:]]


def run_step(gen: Any, enc: dict, namespace: dict) -> dict:
    """Perform one encoded operation on the generator or coroutine ``gen``; return its trace entry."""
    namespace["CURRENT_GEN"] = gen
    start = _log_len(namespace)
    kind = enc["kind"]
    coroutine = is_coroutine(gen)

    def act() -> tuple[str, Any]:
        if kind == "next":
            return "yield", norm(gen.send(None) if coroutine else next(gen))
        if kind == "send":
            return "yield", norm(gen.send(resolve_value(enc["arg"], namespace)))
        if kind == "throw":
            return "yield", norm(gen.throw(resolve_value(enc["arg"], namespace)))
        if kind == "close":
            return "close", norm(gen.close())
        if kind == "exec":
            exec(enc["arg"], namespace)
            return "exec", "ok"
        raise ValueError(kind)

    try:
        if enc["handler"] is not None:
            try:
                raise resolve_value(enc["handler"], namespace)
            except BaseException:
                outcome = act()
        else:
            outcome = act()
    except StopIteration as e:
        outcome = ("return", norm(e.value))
    except BaseException as e:  # noqa: BLE001 - everything is part of the trace
        outcome = ("raise", describe_exc(e))
    return {"op": op_label(enc), "outcome": outcome[0], "value": outcome[1],
            "finished": _gen_finished(gen), "log": _log_delta(namespace, start)}


def final_entry(gen: Any, namespace: dict) -> dict:
    """Close a still-suspended generator (or coroutine) at the end of the script (and collect garbage)."""
    entry = run_step(gen, {"kind": "close", "arg": None, "handler": None}, namespace)
    entry["op"] = "close() [end of script]"
    start = _log_len(namespace)
    gc.collect()
    entry["log"] += _log_delta(namespace, start)
    return entry


def release(gen: Any, namespace: dict) -> None:
    """Let go of a generator (or coroutine) the script is done with, leaving nothing behind for the interpreter's exit.

    A generator that ignored the end-of-script ``close()`` (a ``yield`` in a ``finally``) stays
    suspended, held by the module's ``CURRENT_GEN``; at exit CPython would finalize it after tearing
    the module down (``LOG`` is None by then), and print "Exception ignored in: <generator ...>" after
    the test summary. Close it again until it finishes (each close leaves one more ``finally``; the
    programs terminate), now, while its module is intact; a compiled one that still resists is
    detached. Nothing here enters the trace."""
    if namespace.get("CURRENT_GEN") is gen:
        namespace["CURRENT_GEN"] = None
    for _ in range(100):
        if _gen_finished(gen):
            return
        try:
            gen.close()
        except BaseException:  # noqa: BLE001 - the trace has recorded what the script saw
            pass
    try:
        from runtime import detach
        detach(gen)
    except Exception:  # noqa: BLE001 - a native generator: nothing more to do
        pass


# --------------------------------------------------------------------------- results and diffs

@dataclasses.dataclass
class DiffResult:
    native: list[dict]
    compiled: list[dict]
    native_module: types.ModuleType
    compiled_module: types.ModuleType
    snapshot_points: list[int]                 # step indices at which a round trip happened
    unserializable: list[tuple[int, str]]      # (step index, message) when allowed to fail
    fresh_at: int | None = None
    fresh: list[dict] | None = None


def _entry_text(e: dict | None) -> str:
    if e is None:
        return "<missing>"
    value = _fmt_exc(e["value"]) if e["outcome"] == "raise" else e["value"]
    text = f"{e['outcome']} {value}"
    if e["finished"]:
        text += " [finished]"
    if e["log"]:
        text += f" LOG+={e['log']}"
    return text


def format_diff(title: str, left: list[dict], right: list[dict], left_name: str,
                right_name: str, offset: int = 0) -> str:
    lines = [title]
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else None
        b = right[i] if i < len(right) else None
        op = (a or b)["op"]
        same = a == b
        mark = "  " if same else "!!"
        lines.append(f"{mark} step {i + offset:>2} {op}")
        lines.append(f"{mark}    {left_name:>8}: {_entry_text(a)}")
        if not same:
            lines.append(f"{mark}    {right_name:>8}: {_entry_text(b)}")
    return "\n".join(lines)


def assert_traces_equal(native: list[dict], other: list[dict], *, what: str, offset: int = 0,
                        extra: str = "") -> None:
    if native != other:
        raise AssertionError(format_diff(f"{what}: traces differ{extra}", native, other,
                                         "native", what.split()[0], offset))


# --------------------------------------------------------------------------- the differential run

def _default_mode() -> str:
    return os.environ.get("DG_HARNESS_MODE", COMPILED)


def _norm_script(script: Iterable[Any]) -> list[Op]:
    ops = []
    for op in script:
        if isinstance(op, str):
            op = {"next": NEXT, "close": CLOSE}[op]
        if not isinstance(op, Op):
            raise TypeError(f"script entries must be Op, got {op!r}")
        ops.append(op)
    return ops


def load_pair(source: str, *, mode: str | None = None, all_generators: bool = True
              ) -> tuple[types.ModuleType, types.ModuleType]:
    mode = mode or _default_mode()
    native = load_native(source)
    if mode == NATIVE_VS_NATIVE:
        other = load_native(source, tag="native2")
    elif mode == COMPILED:
        other = load_compiled(source, all_generators=all_generators)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return native, other


def run_native(source: str, script: Sequence[Any], *, entry: str = "gen()",
               final_close: bool = True) -> list[dict]:
    """Run a program natively only and return its trace (for tests that need native facts)."""
    module = load_native(source)
    ns = module.__dict__
    encoded = [encode_op(op) for op in _norm_script(script)]
    gen = eval(entry, ns)
    trace = [run_step(gen, enc, ns) for enc in encoded]
    if final_close and not _gen_finished(gen):
        trace.append(final_entry(gen, ns))
    release(gen, ns)
    return trace


def _round_trip(runner: Any, kind: str, where: str, trace_so_far: Callable[[], str], may_fail: bool
                ) -> tuple[Any, bytes | None, str]:
    """Snapshot, detach and restore ``runner``: ``(restored, snapshot, "")``, or ``(runner, None, message)``
    when the snapshot raised UnserializableValueError and ``may_fail``. Anything else that goes wrong is
    an AssertionError saying where, with the trace so far."""
    from runtime import UnserializableValueError, detach, restore, snapshot

    try:
        data = snapshot(runner)
    except UnserializableValueError as e:
        if may_fail:
            return runner, None, str(e)
        raise AssertionError(f"snapshot {where} raised UnserializableValueError: {e}\n{trace_so_far()}") from e
    except Exception as e:
        raise AssertionError(f"snapshot {where} raised {type(e).__name__}: {e}\n{trace_so_far()}") from e
    assert isinstance(data, bytes), f"snapshot returned {type(data)}"
    try:
        detach(runner)
    except Exception as e:
        raise AssertionError(f"detach {where} raised {type(e).__name__}: {e}\n{trace_so_far()}") from e
    try:
        restored = restore(data)
    except Exception as e:
        raise AssertionError(f"restore of the snapshot {where} raised {type(e).__name__}: {e}\n"
                             f"{trace_so_far()}") from e
    assert runner_kind(restored) == kind, f"restore returned {type(restored)} for a {kind}"
    return restored, data, ""


def differential(source: str, script: Sequence[Any], *, entry: str = "gen()",
                 mode: str | None = None, all_generators: bool = True,
                 snapshot_at: Iterable[int] | None = None,
                 allow_unserializable: bool | Iterable[int] = False,
                 fresh_at: int | str | None = "middle", final_close: bool = True,
                 check_log: bool = True) -> DiffResult:
    """Run ``source`` natively and compiled with ``script``; assert identical traces and LOGs.

    ``entry``: expression (in the module namespace) creating the generator, or the coroutine (driven
    as one, see the module docstring).
    ``snapshot_at``: step indices at which to round-trip (0 = just created, i = after i steps);
    default: every index where the generator is suspended.
    ``allow_unserializable``: True or a set of indices where snapshot may raise
    UnserializableValueError (the run then continues with the un-snapshotted generator).
    ``fresh_at``: "middle", an index, or None: restore the snapshot of that index in a new process.
    """
    mode = mode or _default_mode()
    ops = _norm_script(script)
    encoded = [encode_op(op) for op in ops]
    native_mod, comp_mod = load_pair(source, mode=mode, all_generators=all_generators)
    nns, cns = native_mod.__dict__, comp_mod.__dict__
    compiled_mode = mode == COMPILED
    wanted = None if snapshot_at is None else set(snapshot_at)

    def may_fail(i: int) -> bool:
        if allow_unserializable is True:
            return True
        return bool(allow_unserializable) and i in set(allow_unserializable)

    # native run
    ngen = eval(entry, nns)
    native = [run_step(ngen, enc, nns) for enc in encoded]
    if final_close and not _gen_finished(ngen):
        native.append(final_entry(ngen, nns))
    release(ngen, nns)

    # compiled run, round-tripping at every suspension
    cgen = eval(entry, cns)
    kind = runner_kind(ngen)
    assert runner_kind(cgen) == kind, f"{entry} made a {runner_kind(cgen)} (natively a {kind})"
    compiled: list[dict] = []
    points: list[int] = []
    unser: list[tuple[int, str]] = []
    blobs: dict[int, bytes] = {}
    suspended_at: list[int] = []
    try:
        for i in range(len(encoded) + 1):
            if not _gen_finished(cgen):
                suspended_at.append(i)
                if compiled_mode and (wanted is None or i in wanted):
                    cgen, data, refused = _round_trip(
                        cgen, kind, f"before step {i} ({op_label(encoded[i]) if i < len(encoded) else 'end'})",
                        lambda at=i: format_diff("trace so far", native[:at], compiled, "native", "compiled"),
                        may_fail(i))
                    if data is None:
                        unser.append((i, refused))
                    else:
                        blobs[i] = data
                        points.append(i)
            if i == len(encoded):
                break
            compiled.append(run_step(cgen, encoded[i], cns))
        if final_close and not _gen_finished(cgen):
            compiled.append(final_entry(cgen, cns))
    except BaseException:
        release(cgen, cns)  # a coroutine left suspended would warn at exit, far from the failure
        raise
    release(cgen, cns)

    where = f" (compiled module file: {comp_mod.__file__})" if compiled_mode else ""
    if check_log:
        assert_traces_equal(native, compiled, what="compiled" if compiled_mode else "native2",
                            extra=where)
    else:
        strip = lambda t: [{**e, "log": []} for e in t]  # noqa: E731
        assert_traces_equal(strip(native), strip(compiled), what="compiled", extra=where)

    result = DiffResult(native, compiled, native_mod, comp_mod, points, unser)

    # fresh-process check
    if fresh_at is not None:
        candidates = sorted(blobs) if compiled_mode else suspended_at
        if fresh_at == "middle":
            at = min(candidates, key=lambda k: (abs(k - len(encoded) // 2), -k)) if candidates else None
        else:
            at = int(fresh_at)
            if at not in candidates:
                raise AssertionError(f"fresh_at={at}: no snapshot at that step (have {candidates})")
        if at is not None:
            fresh = run_fresh_process(
                comp_mod.__name__, encoded[at:], entry=entry, final_close=final_close,
                snapshot=blobs.get(at) if compiled_mode else None,
                prefix=None if compiled_mode else encoded[:at], kind=kind)
            expected = native[at:]
            if not check_log:
                fresh = [{**e, "log": []} for e in fresh]
                expected = [{**e, "log": []} for e in expected]
            assert_traces_equal(expected, fresh, what="fresh-process", offset=at,
                                extra=f" (restored from the snapshot before step {at}){where}")
            result.fresh_at, result.fresh = at, fresh
    return result


# --------------------------------------------------------------------------- subprocesses

def child_env(extra_paths: Sequence[str | Path] = ()) -> dict:
    env = dict(os.environ)
    paths = [str(p) for p in extra_paths] + [str(tmp_module_dir()), str(PROJECT_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("DG_HARNESS_MODE", None)
    return env


def run_python(code: str, *, paths: Sequence[str | Path] = (), timeout: float = 60,
               cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the program dir and the project root importable."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=child_env(paths),
                          capture_output=True, text=True, timeout=timeout,
                          cwd=str(cwd or tmp_module_dir()))


def run_fresh_process(module: str, ops: list[dict], *, entry: str = "gen()",
                      snapshot: bytes | None = None, prefix: list[dict] | None = None,
                      final_close: bool = True, paths: Sequence[str | Path] = (),
                      kind: str | None = None) -> list[dict]:
    """Restore ``snapshot`` (or, natively, replay ``prefix``) in a new interpreter, run ``ops``.

    Returns the trace of ``ops`` (plus the end-of-script close) as recorded in the child. ``kind``
    ("generator" or "coroutine"), when given, is what the child must have restored or made.
    """
    spec: dict[str, Any] = {"module": module, "ops": ops, "entry": entry,
                            "final_close": final_close, "prefix": prefix, "snapshot_file": None,
                            "kind": kind}
    fd, spec_path = tempfile.mkstemp(suffix=".json", dir=tmp_module_dir())
    os.close(fd)
    if snapshot is not None:
        snap_path = spec_path[:-5] + ".snap"
        Path(snap_path).write_bytes(snapshot)
        spec["snapshot_file"] = snap_path
    Path(spec_path).write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", spec_path],
                          env=child_env(paths), capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_module_dir()))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_TRACE_MARK):
            return json.loads(line[len(_TRACE_MARK):])
    raise AssertionError(f"fresh process failed (exit {proc.returncode}):\n"
                         f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")


def _child_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["snapshot_file"]:
        from runtime import allow_modules, restore
        allow_modules(spec["module"])  # restore imports the module by itself, once it is allowed
        gen = restore(Path(spec["snapshot_file"]).read_bytes())
        ns = importlib.import_module(spec["module"]).__dict__
    else:
        ns = importlib.import_module(spec["module"]).__dict__
        gen = eval(spec["entry"], ns)
        for enc in spec["prefix"] or []:
            run_step(gen, enc, ns)
    wanted = [spec["kind"]] if spec.get("kind") else ["generator", "coroutine"]
    assert runner_kind(gen) in wanted, f"the fresh process got {type(gen)}, not a {' or '.join(wanted)}"
    trace = [run_step(gen, enc, ns) for enc in spec["ops"]]
    if spec["final_close"] and not _gen_finished(gen):
        trace.append(final_entry(gen, ns))
    sys.stdout.write("\n" + _TRACE_MARK + json.dumps(trace) + "\n")
    sys.stdout.flush()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child_main(sys.argv[2])


def raw_sql(db: Any, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one SQL statement on the SQLite file ``db`` directly, as someone editing the store by hand would."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        with conn:
            return conn.execute(statement, params).fetchall()
    finally:
        conn.close()
