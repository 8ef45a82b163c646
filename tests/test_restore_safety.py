"""Restoring never imports, resolves or calls what a crafted snapshot asks for.

Restore resolves names only through the registry of durable functions and the allow-list
(``runtime.allow``: compiled modules, ``@serializable`` classes, ``allow_modules`` prefixes and a
set of safe builtins). Each test here crafts a snapshot by hand: it takes a real snapshot of a
small compiled generator whose local holds a harmless value, unpacks it with msgpack, puts a
hostile name where a class, function, exception class or durable function is named, and repacks
it. Restore must refuse it with a ``SnapshotError`` subclass, and must neither call the dangerous
callables (replaced by recorders while restore runs) nor import any module.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from crafting import Guard, pack, template
from harness import load_compiled, run_python, tmp_module_dir, unique_module_name, unload
import runtime
from runtime import SnapshotError, restore, snapshot
from runtime.errors import IncompatibleCodeError, NotAllowedError

SOURCE = """
    import os
    import subprocess
    from os import system
    from subprocess import Popen
    from runtime import durable

    CALLS = []

    class Plain:
        pass

    class MyError(Exception):
        pass

    class Guarded:
        __slots__ = ("value",)

        @property
        def hook(self):
            return None

        @hook.setter
        def hook(self, value):
            CALLS.append(("Guarded.hook", value))

    def helper():
        CALLS.append("helper")
        return 1

    @durable
    def gen(x):
        got = yield 1
        yield x, got
"""


@pytest.fixture(scope="module")
def mod():
    module = load_compiled(SOURCE, all_generators=False, tag="safety")
    yield module
    unload(module)


# --------------------------------------------------------------------------- crafting snapshots

def _template(mod) -> list[Any]:
    """A real snapshot of ``mod.gen(mod.helper)`` suspended at its first yield, unpacked."""
    g = mod.gen(mod.helper)
    next(g)
    envelope = template(g)
    assert envelope[2][5] == [[9, "ref", f"{mod.__name__}:helper"]]  # the wire format this file relies on
    return envelope


def with_value(mod, node: Any) -> bytes:
    """The template snapshot with the local ``x`` replaced by the packed value ``node``."""
    envelope = _template(mod)
    envelope[2][5] = [node]
    return pack(envelope)


def with_ident(mod, ident: str) -> bytes:
    """The template snapshot with its frame naming the durable function ``ident``."""
    envelope = _template(mod)
    envelope[2][0] = ident
    return pack(envelope)


def fingerprint(mod) -> bytes:
    return _template(mod)[2][1]


# Where a name can appear in a snapshot: each builds the packed value (or the whole snapshot).
def _as_ref(mod, name):
    return with_value(mod, [9, "ref", name])


def _as_exception(mod, name):
    return with_value(mod, [11, name, [2, "boom"], None, None, [], []])


def _as_exception_group(mod, name):
    return with_value(mod, [13, name, "msg", [2, [10, "ValueError", [2], None, None, [], []]], [2], None, None,
                            [], []])


def _as_instance(mod, name):
    return with_value(mod, [23, [9, "layout", [1, [9, "ref", name], [1, "a"], [1]]], 1])


def _as_stateful_instance(mod, name):
    return with_value(mod, [9, "state", [9, "ref", name], [1, 1, 2]])


def _as_method_owner(mod, name):
    return with_value(mod, [9, "method", [1, [9, "ref", name], "__init__"]])


def _as_frame(mod, name):
    return with_ident(mod, name)


def _as_held_generator(mod, name):
    return with_value(mod, [9, "gen", [1, name, fingerprint(mod), 1, None, "", [1], None]])


def _as_nested_frame(mod, name):
    envelope = _template(mod)
    envelope.append([name, fingerprint(mod), 1, None, "x", [5], None])
    return pack(envelope)


PLACES: dict[str, Callable[[Any, str], bytes]] = {
    "ref": _as_ref,
    "exception-class": _as_exception,
    "exception-group-class": _as_exception_group,
    "instance-class": _as_instance,
    "stateful-instance-class": _as_stateful_instance,
    "method-owner": _as_method_owner,
    "frame-ident": _as_frame,
    "held-generator-ident": _as_held_generator,
    "nested-frame-ident": _as_nested_frame,
}


# --------------------------------------------------------------------------- the guard

@pytest.fixture
def guard(monkeypatch, mod):
    restore(with_value(mod, 1))  # warm up: anything restore imports lazily is imported now
    yield Guard(monkeypatch)
    assert mod.CALLS == [], f"restore ran code of the compiled module: {mod.CALLS}"


# --------------------------------------------------------------------------- sanity

def test_the_template_restores_and_the_guard_sees_nothing(mod, guard):
    g = guard.restore(with_value(mod, [9, "ref", f"{mod.__name__}:helper"]))
    guard.assert_clean()
    assert g.send("got") == (mod.helper, "got")  # the function comes back as a value, uncalled
    assert mod.CALLS == []


def test_a_safe_builtin_restores(mod, guard):
    g = guard.restore(with_value(mod, [9, "builtin", "len"]))
    guard.assert_clean()
    assert g.send(None) == (len, None)


# --------------------------------------------------------------------------- hostile names

NOT_ALLOWED = ["os:system", "posix:system", "nt:system", "subprocess:Popen", "subprocess:run", "builtins:eval",
               "builtins:exec", "builtins:__import__", "builtins:open", "builtins:getattr", "importlib:import_module",
               "pickle:loads", "shutil:rmtree", "runtime.values.allow:allow_modules", "runtime.snapshot:restore",
               "runtime:restore", "os.path:join", "sys:exit"]
NEVER_IMPORTED = ["antigravity:fly", "this:s", "antigravity:geohash", "dg_no_such_module_xyz:gen",
                  "turtle:Turtle", "idlelib.run:main"]


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("name", NOT_ALLOWED)
def test_names_outside_the_allow_list_are_refused(mod, guard, place, name):
    data = PLACES[place](mod, name)
    guard.refuses(data, NotAllowedError)


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("name", NEVER_IMPORTED)
def test_modules_never_imported_stay_unimported(mod, guard, place, name):
    module = name.partition(":")[0]
    top = module.partition(".")[0]
    assert module not in sys.modules and top not in sys.modules
    guard.refuses(PLACES[place](mod, name), NotAllowedError)
    assert module not in sys.modules and top not in sys.modules


def test_the_refusal_says_how_to_allow_a_module(mod, guard):
    error = guard.refuses(with_ident(mod, "antigravity:fly"), NotAllowedError)
    message = str(error)
    assert "antigravity" in message and "allow_modules" in message and "import" in message
    error = guard.refuses(_as_ref(mod, "antigravity:fly"), NotAllowedError)
    assert "allow_modules" in str(error)


@pytest.mark.parametrize("name", ["eval", "exec", "__import__", "open", "getattr", "setattr", "delattr", "compile",
                                  "globals", "locals", "vars", "breakpoint", "input", "help", "exit", "quit",
                                  "type", "super", "memoryview", "classmethod", "staticmethod", "property",
                                  "__build_class__", "__loader__", "__spec__", "dir", "no_such_builtin", "",
                                  "os.system"])
def test_builtins_outside_the_safe_set_are_refused(mod, guard, name):
    guard.refuses(with_value(mod, [9, "builtin", name]), NotAllowedError)


@pytest.mark.parametrize("name", ["eval", "exec", "__import__", "open", "getattr", "object", "type", "len",
                                  "os:system", "Warning.__subclasses__"])
def test_builtin_exception_nodes_name_only_builtin_exceptions(mod, guard, name):
    guard.refuses(with_value(mod, [10, name, [2, "x"], None, None, [], []]))


# --------------------------------------------------------------------------- reaching through an allowed module

THROUGH = ["os.system", "os", "system", "subprocess.Popen", "Popen", "subprocess", "durable", "__builtins__",
           "__builtins__.eval", "helper.__globals__", "helper.__code__", "helper.__call__", "Plain.__subclasses__",
           "Plain.__init__", "Plain.__class__", "Plain.mro", "MyError.with_traceback", "gen.__globals__",
           "__loader__", "__spec__.loader", "CALLS.append", "CALLS"]


@pytest.mark.parametrize("place", ["ref", "exception-class", "instance-class", "stateful-instance-class",
                                   "method-owner", "frame-ident", "held-generator-ident", "nested-frame-ident"])
@pytest.mark.parametrize("path", THROUGH)
def test_names_reaching_through_an_allowed_module_are_refused(mod, guard, place, path):
    name = f"{mod.__name__}:{path}"
    guard.refuses(PLACES[place](mod, name))


def test_a_plain_function_is_not_a_durable_function(mod, guard):
    error = guard.refuses(with_ident(mod, f"{mod.__name__}:helper"), IncompatibleCodeError)
    assert "helper" in str(error)


# --------------------------------------------------------------------------- instances and classes that are not allowed

@pytest.mark.parametrize("klass", [[9, "builtin", "object"], [9, "builtin", "dict"], [9, "builtin", "int"],
                                   [9, "builtin", "len"], "subprocess:Popen", None, 5, [1]])
def test_instances_of_classes_that_are_not_allowed_are_refused(mod, guard, klass):
    node = klass if not isinstance(klass, str) else [9, "ref", klass]
    guard.refuses(with_value(mod, [9, "obj", [2, node, [2, "a"], [2]], [1, 1]]))
    guard.refuses(with_value(mod, [9, "state", node, [1, 1]]))


@pytest.mark.parametrize("owner,method", [
    ([9, "builtin", "object"], "__subclasses__"),
    ([9, "builtin", "object"], "__init_subclass__"),
    ([9, "builtin", "int"], "from_bytes"),
    ("text", "format"),
    ([1], "append"),
    ("PLAIN_INSTANCE", "__reduce_ex__"),
    ("PLAIN_INSTANCE", "__init__"),
    ("PLAIN_CLASS", "mro"),
    ("PLAIN_CLASS", "__subclasses__"),
    ("PLAIN_CLASS", "helper"),
])
def test_bound_methods_only_of_functions_defined_in_allowed_classes(mod, guard, owner, method):
    plain = [9, "ref", f"{mod.__name__}:Plain"]
    if owner == "PLAIN_INSTANCE":
        owner = [9, "obj", [2, plain, [2], [2]], [1]]
    elif owner == "PLAIN_CLASS":
        owner = plain
    guard.refuses(with_value(mod, [9, "method", [1, owner, method]]))


def test_allowed_exception_classes_must_be_exceptions(mod, guard):
    guard.refuses(_as_exception(mod, f"{mod.__name__}:Plain"))
    guard.refuses(_as_exception(mod, f"{mod.__name__}:helper"))
    # the real one restores, without running its __init__
    g = guard.restore(_as_exception(mod, f"{mod.__name__}:MyError"))
    guard.assert_clean()
    value, _ = g.send(None)
    assert type(value) is mod.MyError and value.args == ("boom",)


@pytest.mark.parametrize("name", ["subprocess:CalledProcessError", "subprocess:TimeoutExpired", "os:error",
                                  "builtins:SystemExit", "shutil:Error", "antigravity:Error"])
def test_exception_classes_outside_the_allow_list_are_refused(mod, guard, name):
    guard.refuses(_as_exception(mod, name), NotAllowedError)


def test_classes_of_the_standard_modules_restore_may_name(mod, guard):
    """json, contextlib, operator, ... (runtime.values.allow.STANDARD_MODULES) compute on what they are given."""
    import json

    g = guard.restore(_as_exception(mod, "json.decoder:JSONDecodeError"))
    guard.assert_clean()
    value, _ = g.send(None)
    assert type(value) is json.JSONDecodeError


# --------------------------------------------------------------------------- the import gate in registry.resolve

def _side_effect_module() -> tuple[str, Path]:
    """A module that, when imported, leaves a marker file next to itself."""
    name = unique_module_name("sideeffect")
    path = tmp_module_dir() / f"{name}.py"
    path.write_text("from pathlib import Path\nPath(__file__).with_suffix('.ran').write_text('imported')\n")
    return name, path.with_suffix(".ran")


def test_a_frame_naming_an_importable_module_does_not_import_it(mod, guard):
    name, marker = _side_effect_module()
    for place in ("frame-ident", "held-generator-ident", "nested-frame-ident", "ref", "exception-class"):
        guard.refuses(PLACES[place](mod, f"{name}:gen"), NotAllowedError)
        assert name not in sys.modules and not marker.exists()


def test_allow_modules_opens_the_gate(mod, guard):
    name, marker = _side_effect_module()
    guard.refuses(with_ident(mod, f"{name}:gen"), NotAllowedError)
    assert not marker.exists()
    runtime.allow_modules(name)
    try:
        with pytest.raises(IncompatibleCodeError):  # imported now, but it has no durable function ``gen``
            restore(with_ident(mod, f"{name}:gen"))
        assert marker.exists() and name in sys.modules
    finally:
        runtime.disallow_modules(name)
        sys.modules.pop(name, None)
    guard.refuses(with_ident(mod, f"{name}:gen"), NotAllowedError)


def test_a_fresh_process_refuses_until_the_module_is_allowed_or_imported(mod):
    g = mod.gen(mod.helper)
    next(g)
    snap = tmp_module_dir() / f"{unique_module_name('safety')}.snap"
    snap.write_bytes(snapshot(g))
    runtime.detach(g)
    proc = run_python(f"""
        import sys
        import runtime
        data = open({str(snap)!r}, "rb").read()
        try:
            runtime.restore(data)
        except runtime.NotAllowedError as exc:
            print("REFUSED", {mod.__name__!r} in sys.modules, "allow_modules" in str(exc))
        import {mod.__name__} as m
        g = runtime.restore(data)
        print("IMPORTED", g.send(7)[1], m.CALLS)
        del sys.modules[{mod.__name__!r}]
        runtime.allow_modules({mod.__name__!r})
        g = runtime.restore(data)
        print("ALLOWED", g.send(8)[1])
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["REFUSED False True", "IMPORTED 7 []", "ALLOWED 8"], proc.stdout


# --------------------------------------------------------------------------- object layouts

def test_an_instance_layout_cannot_run_a_property_setter(mod, guard):
    """Slot names in a crafted layout must be the class's slots, not arbitrary attributes."""
    guarded = [9, "ref", f"{mod.__name__}:Guarded"]
    guard.refuses(with_value(mod, [23, [9, "layout", [1, guarded, [1], [1, "hook"]]], "payload"]))
    guard.refuses(with_value(mod, [23, [9, "layout", [1, guarded, [1], [1, "value", "hook"]]], 1, "payload"]))
    assert mod.CALLS == []
    # the real layout restores
    g = guard.restore(with_value(mod, [23, [9, "layout", [1, guarded, [1], [1, "value"]]], 5]))
    guard.assert_clean()
    value, _ = g.send(None)
    assert type(value) is mod.Guarded and value.value == 5


def test_an_allowed_module_failing_at_import_is_a_snapshot_error(mod):
    """Regression: a frame naming an allowed module whose import raised let that exception out of restore."""
    name = unique_module_name("boom")
    (tmp_module_dir() / f"{name}.py").write_text("raise RuntimeError('boom at import')\n")
    runtime.allow_modules(name)
    try:
        for data in (with_ident(mod, f"{name}:gen"), _as_ref(mod, f"{name}:f"),
                     _as_held_generator(mod, f"{name}:gen")):
            with pytest.raises(SnapshotError, match="boom at import"):
                restore(data)
            assert name not in sys.modules
    finally:
        runtime.disallow_modules(name)
