"""Crafting snapshots by hand for the safety tests: unpack a real one, put a hostile node in it, repack;
and a guard that runs restore with dangerous callables replaced by recorders and imports watched."""
from __future__ import annotations

import builtins
import os
import subprocess
import sys
from typing import Any, Callable

import msgpack
import pytest

import runtime
from runtime import SnapshotError, restore


FIRST_VALUE_SLOT = 1
"""The memo slot the first value of a frame's locals takes (in a frame without closure cells): slot 0
is the frame's own generator (snapshot format 2)."""


def shared_tuple_dag(k: int, first_slot: int) -> list[Any]:
    """Packed value nodes T(0) .. T(k), T(i) = (T(i-1), T(i-1)) by reference, T(0) taking ``first_slot``:
    hashing T(k) visits 2**k leaves."""
    return [[2, 1, 2], *[[2, [0, first_slot + i - 1], [0, first_slot + i - 1]] for i in range(1, k + 1)]]


def unpack(data: bytes) -> list[Any]:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def pack(envelope: list[Any]) -> bytes:
    return msgpack.packb(envelope, use_bin_type=True)


def template(gen: Any) -> list[Any]:
    """The unpacked snapshot of the suspended durable generator ``gen`` (detached afterwards)."""
    data = runtime.snapshot(gen)
    runtime.detach(gen)
    return unpack(data)


def with_local(envelope: list[Any], node: Any, index: int = 0) -> bytes:
    """``envelope`` repacked with the packed value of its first frame's local number ``index`` replaced."""
    envelope[2][5][index] = node
    return pack(envelope)


class Recorder:
    """Stands in for a dangerous callable while restore runs; remembers every call."""

    def __init__(self, name: str, calls: list, forward: Callable[..., Any] | None = None) -> None:
        self.name, self.calls, self.forward = name, calls, forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((self.name, args))
        if self.forward is not None:
            return self.forward(*args, **kwargs)
        raise AssertionError(f"restore called {self.name}{args!r}")


DANGEROUS: list[tuple[Any, str]] = [
    (os, "system"), (os, "popen"), (os, "execv"), (os, "execvp"), (os, "remove"), (os, "unlink"),
    (subprocess, "Popen"), (subprocess, "run"), (subprocess, "call"), (subprocess, "check_output"),
    (builtins, "eval"), (builtins, "exec"), (builtins, "open"), (builtins, "compile"),
    (builtins, "breakpoint"), (builtins, "input"),
]
_posix = sys.modules.get("posix") or sys.modules.get("nt")
if _posix is not None:
    DANGEROUS += [(_posix, "system")]


class Guard:
    """Runs restore with the dangerous callables replaced by recorders; records imports and new modules."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: list[tuple[str, Any]] = []
        self.imports: list[str] = []
        self.new_modules: set[str] = set()

    def restore(self, data: bytes) -> Any:
        real_import = builtins.__import__

        def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
            if level == 0:  # the runtime's own relative imports are not what a snapshot asks for
                self.imports.append(name)
            return real_import(name, globals, locals, fromlist, level)

        before = set(sys.modules)
        with self.monkeypatch.context() as patch:
            for owner, attr in DANGEROUS:
                if hasattr(owner, attr):
                    patch.setattr(owner, attr, Recorder(f"{getattr(owner, '__name__', owner)}.{attr}", self.calls))
            patch.setattr(builtins, "__import__", recording_import)
            try:
                return restore(data)
            finally:
                self.new_modules = set(sys.modules) - before

    def refuses(self, data: bytes, error: type[BaseException] = SnapshotError) -> SnapshotError:
        """Restore ``data``, which must be refused with ``error``, calling and importing nothing."""
        with pytest.raises(SnapshotError) as info:
            self.restore(data)
        assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
        self.assert_clean()
        return info.value

    def assert_clean(self) -> None:
        assert self.calls == [], f"restore called {self.calls}"
        assert self.imports == [], f"restore imported {self.imports}"
        assert self.new_modules == set(), f"restore imported {sorted(self.new_modules)}"
