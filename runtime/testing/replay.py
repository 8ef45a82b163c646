"""A run restored in a fresh interpreter: the child restores a committed snapshot, answers the program's
requests with what the fault-free run got, and reports the first request or ending that differs.

The parent sends (on stdin) an envelope of plain data and runtime-encoded values — never code: the child
imports only the program's module, as a worker would. Run as ``python -m runtime.testing.replay``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from typing import TYPE_CHECKING, Any, Callable, Sequence

import msgpack

from ..errors import SnapshotError
from ..programs import program_names
from ..programs import requests as rq
from ..programs.combinators import All
from ..values import dump_value, load_value

if TYPE_CHECKING:
    from .crashes import CommitMark
    from .findings import Finding
    from .simulation import Config

TIMEOUT = 120.0
"""Seconds a fresh interpreter may take to restore and replay one run."""


def describe(outcome: str, value: Any) -> tuple[Any, ...]:
    """What the program did on one resumption, as plain data that both interpreters compute alike."""
    if outcome == "return":
        return ("return", value)
    if outcome == "raise":
        return ("raise", f"{type(value).__module__}.{type(value).__qualname__}", value.args)
    if isinstance(value, rq.Step):
        try:
            ref = program_names.step_ref(value.fn)
        except TypeError:
            ref = repr(value.fn)
        return ("step", ref, list(value.args), dict(value.kwargs), value.policy.to_json())
    if isinstance(value, rq.Wait):
        return ("wait", value.signal, value.timeout)
    if isinstance(value, rq.Sleep):
        return ("sleep", value.seconds, value.until)
    if isinstance(value, rq.Checkpoint):
        return ("checkpoint",)
    if isinstance(value, All):  # runtime.gather/race: its parts (a part parked before is named by its key only)
        return ("all", [[list(part.key), None if part.request is None else describe("yield", part.request)]
                        for part in value.parts])
    return ("progress", value)


def _encode(value: Any) -> bytes | None:
    try:
        return dump_value(value)
    except (SnapshotError, RecursionError):
        return None


def envelope(config: "Config", mark: "CommitMark", transcript: Sequence[tuple[tuple[str, Any], str, Any]]) -> bytes:
    """What the child needs: where to import from, the snapshot, and the answers and expectations after it."""
    turns: list[list[Any]] = []
    for (kind, given), outcome, value in transcript[mark.request_no:]:
        action = _encode(given) if kind != "next" else b""
        expected = _encode(describe(outcome, value))
        if action is None or expected is None:
            break  # what follows cannot be carried to another interpreter: the replay checks up to here
        turns.append([kind, action, expected])
    hooks = [[list(h.modules), bool(h.all_generators)] for h in sys.meta_path if type(h).__name__ == "ImportHook"]
    return msgpack.packb({"path": list(sys.path), "hooks": hooks, "ref": config.ref, "snapshot": mark.snapshot,
                          "turns": turns}, use_bin_type=True)


def check_in_fresh_interpreter(config: "Config", mark: "CommitMark",
                               transcript: Sequence[tuple[tuple[str, Any], str, Any]]) -> "Finding | None":
    """Replay the run from ``mark`` in a new interpreter; a Finding when it differs or cannot be restored."""
    from .findings import Finding

    where = f"at request {mark.request_no}, {mark.where()}, restored in a fresh interpreter"
    try:
        done = subprocess.run([sys.executable, "-m", "runtime.testing.replay"],
                              input=envelope(config, mark, transcript), capture_output=True, timeout=TIMEOUT,
                              cwd=os.getcwd())
    except subprocess.TimeoutExpired:
        return Finding("fresh", where, f"the fresh interpreter did not finish within {TIMEOUT:g} s")
    try:
        answer = json.loads(done.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        return Finding("fresh", where, "the fresh interpreter failed:\n" + "\n".join(tail))
    if answer.get("ok"):
        return None
    return Finding("fresh", where, answer["problem"] + "\nhint: a fresh interpreter has only what the program's "
                   "module makes when it is imported: state the run left in memory (module globals, registered "
                   "codecs or allowed modules set up by the test) is not there after a crash or on another machine")


def same_value(expected: Any, got: Any) -> bool:
    """Equal (``==``), or encoded alike (values whose class has no ``__eq__``, rebuilt from a snapshot)."""
    try:
        if expected == got:
            return True
    except Exception:  # noqa: BLE001 - a user __eq__ may raise anything
        pass
    return _encode(expected) == _encode(got)


def _child(data: bytes) -> dict[str, Any]:
    message = msgpack.unpackb(data, raw=False)
    sys.path[:] = [p for p in message["path"] if isinstance(p, str)]
    try:
        from transpiler import install_import_hook
    except ImportError:  # a runtime-only install: the program's module is compiled ahead of time
        pass
    else:
        for modules, all_generators in message["hooks"]:
            install_import_hook(modules, all_generators=all_generators)
    from ..programs.loading import ProgramError, load_function
    from ..snapshot import detach, restore
    from . import errors  # noqa: F401 - InjectedFailure, which an answer may carry

    try:
        load_function(message["ref"], named_by_operator=True)
        gen = restore(message["snapshot"])
    except (ProgramError, SnapshotError) as exc:
        return {"ok": False, "problem": f"the snapshot cannot be restored there: {type(exc).__name__}: {exc}"}
    advance, loop = _advance_generator(gen), None
    if type(gen) is types.CoroutineType:  # driven as the runner drives it: by a pump on an event loop
        from ..programs import pump

        loop = pump.new_loop()
        advance = pump.Pump(gen, loop).resume
    try:
        for number, (kind, action, expected_data) in enumerate(message["turns"], 1):
            expected = load_value(expected_data)
            given = load_value(action) if kind != "next" else None
            got = describe(*advance((kind, given)))
            if not same_value(tuple(expected), got):
                return {"ok": False, "problem": f"after the restore the program {_show(got)} (resumption {number} "
                                                f"after it); without a crash it {_show(tuple(expected))}"}
    finally:
        if (gen.cr_frame if type(gen) is types.CoroutineType else gen.gi_frame) is not None:
            detach(gen)  # as a worker leaves it: its finally blocks do not run when this interpreter exits
        if loop is not None:
            pump.close_loop(loop)  # (cancelling the tasks the program left running)
    return {"ok": True, "turns": len(message["turns"])}


def _advance_generator(gen: types.GeneratorType) -> Callable[[tuple[str, Any]], tuple[str, Any]]:
    def advance(action: tuple[str, Any]) -> tuple[str, Any]:
        kind, given = action
        try:
            return "yield", (next(gen) if kind == "next" else gen.send(given) if kind == "send" else gen.throw(given))
        except StopIteration as stop:
            return "return", stop.value
        except Exception as exc:  # noqa: BLE001 - the program's own exception is what is compared
            return "raise", exc
    return advance


def _show(described: tuple[Any, ...]) -> str:
    kind, *rest = described
    if kind == "return":
        text = f"returned {rest[0]!r}"
    elif kind == "raise":
        text = f"raised {rest[0]}{tuple(rest[1])!r}"
    else:
        text = f"yielded {kind}({', '.join(repr(r) for r in rest)})"
    return text if len(text) <= 200 else text[:197] + "..."


if __name__ == "__main__":
    print(json.dumps(_child(sys.stdin.buffer.read())))
