"""Value kinds beyond the codec's built-in nodes: how each is split into parts and rebuilt.

A kind turns an object into ``(head, body)``. Both parts are ordinary values that the codec
encodes in turn (so they may hold anything a snapshot can carry, shared references included),
under the kind's wire ``name``:

* one-phase kinds (``fill`` is None) rebuild the object from the head alone: ``create(head)``.
  A reference cycle through the head back to the object cannot be rebuilt, so the encoder
  refuses it with the unserializable-value error;
* two-phase kinds (mutable objects that may contain themselves) rebuild an empty object with
  ``create(head)``, then ``fill(obj, head, body)`` once the body is decoded; the body may refer
  back to the object.

Kinds are looked up by the object's exact type (subclasses are not covered by their base's
kind). ``register_codec`` is the public way to add one for a user type.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

NO_BODY: Any = object()
"""The body of an object of a one-phase kind."""

GLOBAL = "global"
"""The kind of a module-level object carried by reference: head ``[module, name]`` (objects.py)."""

STALE_ITERATOR = "stale-iterator"
"""The kind of a dict or set iterator whose dict or set changed size under it (iterator_kinds)."""

INSTANCE = "obj"
"""The kind of instances of allowed classes (head: their layout, body: attribute values); the codec
writes it as a compact node of its own."""

generation = 0
"""Bumped whenever kinds or the allow-list change, so caches of per-type decisions start afresh."""


def changed() -> None:
    global generation
    generation += 1


@dataclass(frozen=True)
class Kind:
    """How one kind of value travels: ``encode(obj) -> (head, body)``, ``create(head)``, ``fill(obj, head, body)``."""

    name: str
    encode: Callable[[Any], tuple[Any, Any]]
    create: Callable[[Any], Any]
    fill: Callable[[Any, Any, Any], None] | None = None


class Unsupported(Exception):
    """Raised by a kind's ``encode`` for a value it cannot carry; the snapshot then fails with the
    unserializable-value error, whose message ends with ``reason`` (e.g. ``"is not supported: ..."``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


BY_TYPE: dict[type, Kind] = {}
BY_NAME: dict[str, Kind] = {}
FORWARD: set[str] = set()
"""Two-phase kinds whose body may name an object that is still being built (a closure cell holding
the function or generator that closes over it): the decoder fills such a body once that object exists."""
USER_CODECS: set[type] = set()
"""Classes given a codec by ``register_codec``: their own code runs on snapshot data (they opted in)."""

_STANDARD = (".stdlib_kinds", ".iterator_kinds")
_standard_loaded = False


def load_standard() -> None:
    """Register the kinds of standard-library values and iterators (done at the first snapshot or
    restore, so that importing the runtime does not import datetime, decimal, uuid, zoneinfo, ...)."""
    global _standard_loaded
    if not _standard_loaded:
        _standard_loaded = True
        for module in _STANDARD:
            importlib.import_module(module, __package__)


def add(kind: Kind, *types: type) -> Kind:
    """Register ``kind`` under its wire name, for objects whose exact type is one of ``types``."""
    existing = BY_NAME.get(kind.name)
    if existing is not None and existing is not kind:
        raise ValueError(f"a value kind named {kind.name!r} is already registered")
    BY_NAME[kind.name] = kind
    for tp in types:
        BY_TYPE[tp] = kind
    changed()
    return kind


def register_codec(cls: type, encode: Callable[[Any], Any], decode: Callable[[Any], Any], *,
                   name: str | None = None) -> None:
    """Let snapshots carry instances of ``cls`` (exactly that class, not its subclasses).

    ``encode(obj)`` returns any value a snapshot can carry (ints, strs, lists, dicts, other
    registered types, ...); ``decode(value)`` gets that value back, decoded, and returns the
    object. ``name`` is the name written into snapshots (default ``module:qualname`` of ``cls``):
    keep it stable, since restore looks the codec up by it. Registering the same class again
    replaces its codec.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_codec() needs a class, not {type(cls).__name__!r}")
    if not (callable(encode) and callable(decode)):
        raise TypeError("register_codec() needs callable encode and decode functions")
    wire = name if name is not None else f"user:{cls.__module__}:{cls.__qualname__}"
    previous = BY_TYPE.get(cls)
    if previous is not None and previous.name == wire:
        del BY_NAME[wire]
    add(Kind(wire, lambda obj: (encode(obj), NO_BODY), decode), cls)
    USER_CODECS.add(cls)
