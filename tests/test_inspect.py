"""runtime.inspect_snapshot and `durable inspect`: what a snapshot holds, without importing user modules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner

from harness import load_compiled
import runtime
from transpiler.cli import main

ROOT = Path(__file__).resolve().parent.parent
SOURCE = """
import dataclasses
from runtime import durable

@dataclasses.dataclass
class Order:
    id: int
    items: list

class Rejected(Exception):
    pass

@durable
def child(n):
    last = None
    for i in range(n):
        yield i       # CHILD-YIELD
        last = i
    return last

@durable
def workflow(order):
    seen = {"count": 0}
    problem = Rejected("late", 3)
    data = [1, 2]
    data.append(data)
    done = yield from child(3)    # PARENT-YIELD
    yield order, seen, problem, data, done
"""


def _line(marker: str) -> int:
    return next(i for i, text in enumerate(textwrap.dedent(SOURCE).splitlines(), 1) if marker in text)


def _snapshot() -> tuple[object, bytes]:
    mod = load_compiled(SOURCE, all_generators=False)
    g = mod.workflow(mod.Order(7, ["pen", "ink"]))
    assert next(g) == 0
    return mod, runtime.snapshot(g)


def test_inspect_shows_frames_lines_and_readable_locals():
    mod, data = _snapshot()
    info = runtime.inspect_snapshot(data)
    assert info.format == 3 and info.size == len(data) and info.signature == "unsigned"
    outer, inner = info.frames
    assert outer.function == f"{mod.__name__}:workflow" and inner.function == f"{mod.__name__}:child"
    assert outer.line == _line("PARENT-YIELD") and inner.line == _line("CHILD-YIELD")
    assert outer.state > 0 and inner.state > 0
    assert outer.locals["order"] == "Order(id=7, items=['pen', 'ink'])"
    assert outer.locals["seen"] == "{'count': 0}"
    assert outer.locals["problem"] == f"{mod.__name__}:Rejected('late', 3)"
    assert outer.locals["data"] == "[1, 2, <...>]"  # the cycle is marked, not followed
    iterator = next(n for n in inner.notes if n.startswith("_dg_it1_"))  # named by the loop's identity
    assert inner.locals["i"] == "0" and inner.notes[iterator] == "the iterator of a `for` loop"
    delegate = next(n for n in outer.locals if n.startswith("_dg_yf1_"))
    assert outer.locals[delegate] == "<frame 1>"
    assert outer.notes[delegate] == "the iterator a `yield from` delegates to"
    text = str(info)
    assert f"frame 0: {mod.__name__}:workflow" in text and "order = Order(id=7" in text
    assert json.loads(json.dumps(info.to_dict()))["frames"][1]["locals"]["i"] == "0"


def test_inspect_never_imports_or_resolves_what_a_snapshot_names():
    record = ["dg_not_a_module_xyz:flow", b"\0" * 8, 3, 12, "x,f",
              [[23, [9, "layout", [1, [9, "ref", "dg_not_a_module_xyz:Thing"], [1, "a"], [1]]], 5],
               [9, "ref", "os:system"]], None]
    data = msgpack.packb([b"DG", 1, record], use_bin_type=True)
    info = runtime.inspect_snapshot(data)
    assert info.frames[0].locals == {"x": "Thing(a=5)", "f": "<os:system>"}
    assert "dg_not_a_module_xyz" not in sys.modules
    with pytest.raises(runtime.SnapshotError):
        runtime.restore(data)


def test_inspect_rejects_what_restore_rejects():
    for bad in (b"", b"junk", msgpack.packb([b"XX", 1, []]), msgpack.packb([b"DG", 99, []])):
        with pytest.raises(runtime.SnapshotError):
            runtime.inspect_snapshot(bad)


def test_cli_inspect_text_and_json(tmp_path):
    mod, data = _snapshot()
    path = tmp_path / "flow.snapshot"
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{mod.__name__}:workflow" in result.output and "order = Order(id=7" in result.output
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["frames"][0]["locals"]["seen"] == "{'count': 0}"


def test_cli_inspect_bad_input_exit_codes(tmp_path):
    junk = tmp_path / "junk.snapshot"
    junk.write_bytes(b"not a snapshot")
    result = CliRunner().invoke(main, ["inspect", str(junk)])
    assert result.exit_code == 3 and "error: CorruptSnapshotError" in result.output
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "cannot read the file" in result.output  # bad input, as the README says


def test_cli_inspect_in_a_fresh_process_does_not_import_the_user_module(tmp_path):
    (tmp_path / "dg_inspect_marker.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(tmp_path / 'imported')!r}).write_text("imported")
    """) + textwrap.dedent(SOURCE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    make = textwrap.dedent(f"""
        import pathlib, runtime, transpiler
        transpiler.install_import_hook(["dg_inspect_marker"])
        import dg_inspect_marker as m
        g = m.workflow(m.Order(1, []))
        next(g)
        pathlib.Path({str(tmp_path / 'flow.snapshot')!r}).write_bytes(runtime.snapshot(g))
    """)
    subprocess.run([sys.executable, "-c", make], env=env, check=True)
    (tmp_path / "imported").unlink()
    done = subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", "inspect",
                           str(tmp_path / "flow.snapshot")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dg_inspect_marker:workflow" in done.stdout
    assert not (tmp_path / "imported").exists()


def test_cli_inspect_verifies_with_the_environment_key(tmp_path):
    """The key in the environment applies to every command (the library reads it too)."""
    previous = runtime.configure(signing_key=b"s" * 32)
    try:
        _, data = _snapshot()
    finally:
        runtime.restore_settings(previous)
    path = tmp_path / "signed.snapshot"
    path.write_bytes(data)

    def inspect(**keys: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **keys}
        env.pop("DURABLE_SIGNING_KEY", None) if "DURABLE_SIGNING_KEY" not in keys else None
        return subprocess.run([sys.executable, "-c", "from transpiler.cli import run; run()", "inspect", str(path)],
                              env=env, capture_output=True, text=True)

    done = inspect(DURABLE_SIGNING_KEY="s" * 32)
    assert done.returncode == 0 and "signature: verified" in done.stdout, done.stderr
    done = inspect(DURABLE_ACCEPTED_KEYS=f"{'x' * 32},{'s' * 32}")  # verifying without signing
    assert done.returncode == 0 and "signature: verified" in done.stdout, done.stderr
    done = inspect(DURABLE_SIGNING_KEY="t" * 32)
    assert done.returncode == 3 and "SignatureError" in done.stderr
    done = inspect(DURABLE_SIGNING_KEY="short")
    assert done.returncode == 2 and "at least 16 bytes" in done.stderr and "Traceback" not in done.stderr


def test_inspecting_again_and_again_keeps_nothing_behind():
    """The inspector's stand-in exception classes were cached forever: 3 inspects of a 1.9 MB input took
    239 → 598 MB. They now live as long as one inspection."""
    import gc
    import tracemalloc

    _, data = _snapshot()
    envelope = msgpack.unpackb(data, raw=False)
    envelope[2][5][0] = [1, *[[11, f"nowhere_{i}:Error{i}", [2], None, None, [], []] for i in range(2000)]]
    crafted = msgpack.packb(envelope, use_bin_type=True)
    runtime.inspect_snapshot(crafted)
    gc.collect()
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(3):
            runtime.inspect_snapshot(crafted)
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert sizes[-1] - sizes[0] < 200_000, sizes
