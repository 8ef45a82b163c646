"""Built-in things as values: methods of built-in types and of built-in values, functools.partial,
modules, dict views.

None of them is rebuilt by calling what the snapshot names:

* a method of a built-in type (``str.upper``, ``int.__add__``) is looked up in the type's own
  dictionary; a method bound to a built-in value (``text.upper``, ``n.__add__``, ``items.append``) is
  read from the value with the type's C attribute lookup. Methods that read or write attributes by
  name or format strings (``__getattribute__``, ``__setattr__``, ``str.format``, ...) are never carried:
  they would turn a snapshot's data into a way to reach any attribute;
* ``functools.partial(func, *args, **keywords)`` only stores what it is given;
* a module is one restore may import (the allow rules);
* a dict view is made by the dict type's own ``keys``/``values``/``items``.
"""
from __future__ import annotations

import collections
import functools
import gc
import re
import sys
import types
from typing import Any

from ..errors import CorruptSnapshotError
from . import allow, kinds, objects
from .kinds import NO_BODY, Kind, Unsupported

DATA_TYPES: tuple[type, ...] = (str, bytes, bytearray, int, float, complex, bool, list, tuple, dict, set, frozenset,
                                range, slice, collections.deque, collections.OrderedDict, collections.defaultdict,
                                collections.Counter, re.Pattern)
"""Built-in types whose methods (unbound, or bound to their values) travel."""

UNSAFE_METHODS = frozenset({
    "__getattribute__", "__getattr__", "__setattr__", "__delattr__", "__init__", "__new__", "__init_subclass__",
    "__subclasshook__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__", "__class_getitem__",
    "__format__", "format", "format_map", "__dir__", "__sizeof__",
})
"""Methods never carried: they reach attributes by name, or build and unpickle objects."""

_METHOD_TYPES = (types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType)
_BOUND_TYPES = (types.BuiltinMethodType, types.MethodWrapperType, type(re.compile("").match))
"""Methods bound to a value (the last: a method of a C type that knows its defining class, ``pattern.match``)."""


# -- methods of built-in types, unbound: str.upper, int.__add__, dict.fromkeys ---------------------

def _classify_descriptor(obj: Any) -> tuple[str, Any, Any] | None:
    if type(obj) not in _METHOD_TYPES:
        return None
    owner, name = getattr(obj, "__objclass__", None), getattr(obj, "__name__", None)
    if owner not in DATA_TYPES or name in UNSAFE_METHODS or vars(owner).get(name) is not obj:
        return None
    return "builtin-method", [owner, name], NO_BODY


def _create_descriptor(head: Any) -> Any:
    owner, name = _owner_and_name("builtin-method", head)
    if type(owner) is not type or owner not in DATA_TYPES:
        raise CorruptSnapshotError("malformed method of a built-in type in snapshot")
    found = vars(owner).get(name)
    if type(found) not in _METHOD_TYPES:
        raise CorruptSnapshotError(f"{owner.__name__} has no method {name!r}")
    return found


def _owner_and_name(what: str, head: Any) -> tuple[Any, str]:
    if type(head) is not list or len(head) != 2 or type(head[1]) is not str or head[1] in UNSAFE_METHODS:
        raise CorruptSnapshotError(f"malformed {what} in snapshot")
    return head[0], head[1]


# -- methods bound to built-in values: text.upper, n.__add__, items.append -----------------------

def _classify_bound(obj: Any) -> tuple[str, Any, Any] | None:
    if type(obj) not in _BOUND_TYPES:
        return None
    owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", None)
    if not _data_owner(owner) or not isinstance(name, str) or name in UNSAFE_METHODS:
        return None
    return "cmethod", [owner, name], NO_BODY


def _data_owner(owner: Any) -> bool:
    """A built-in value, or a built-in type itself (its class methods: ``dict.fromkeys``)."""
    return type(owner) in DATA_TYPES or (type(owner) is type and owner in DATA_TYPES)


def _create_bound(head: Any) -> Any:
    owner, name = _owner_and_name("method of a built-in value", head)
    cls = owner if type(owner) is type else type(owner)
    if not _data_owner(owner) or type(vars(cls).get(name, getattr(cls, name, None))) not in _METHOD_TYPES:
        raise CorruptSnapshotError(f"method {name!r} of a {cls.__name__} is not a method of a built-in type")
    return getattr(owner, name)  # the built-in type's own C attribute lookup


# -- functools.partial ------------------------------------------------------------------------------

def _encode_partial(p: functools.partial[Any]) -> tuple[Any, Any]:
    return [p.func, p.args, p.keywords or None, dict(vars(p)) or None], NO_BODY


def _create_partial(head: Any) -> functools.partial[Any]:
    if type(head) is not list or len(head) != 4:
        raise CorruptSnapshotError("malformed functools.partial in snapshot")
    func, args, keywords, attrs = head
    if not callable(func) or type(args) is not tuple or not (keywords is None or type(keywords) is dict) \
            or not (attrs is None or type(attrs) is dict):
        raise CorruptSnapshotError("malformed functools.partial in snapshot")
    if not all(type(k) is str for k in (keywords or {})) or not all(type(k) is str for k in (attrs or {})):
        raise CorruptSnapshotError("malformed functools.partial in snapshot")
    made = functools.partial(func, *args, **(keywords or {}))  # stores them; calls nothing
    if attrs:
        vars(made).update(attrs)
    return made


# -- modules ---------------------------------------------------------------------------------------

def _classify_module(obj: Any) -> tuple[str, Any, Any] | None:
    if type(obj) is not types.ModuleType:
        return None
    name = obj.__name__
    if not isinstance(name, str) or sys.modules.get(name) is not obj:
        return None
    if not allow.module_allowed(name):
        raise Unsupported(f"is not supported: restore could not import module {name!r}, which is not allowed "
                          f"(runtime.allow_modules({name!r}) lets snapshots name it)")
    return "module", name, NO_BODY


def _create_module(name: Any) -> types.ModuleType:
    if type(name) is not str:
        raise CorruptSnapshotError("malformed module in snapshot")
    allow.import_allowed(name, f"snapshot holds module {name!r}")
    return sys.modules[name]


# -- dict views ------------------------------------------------------------------------------------

_VIEWS: dict[type, str] = {}
for _mapping in (dict, collections.OrderedDict):
    _VIEWS.update({type(_mapping().keys()): "keys", type(_mapping().values()): "values",
                   type(_mapping().items()): "items"})


def _encode_view(view: Any) -> tuple[Any, Any]:
    owners = [r for r in gc.get_referents(view) if isinstance(r, dict)]  # a view holds its dict only
    if len(owners) != 1:
        raise Unsupported("is not supported: the dict of this view could not be found")
    return [owners[0], _VIEWS[type(view)]], NO_BODY


def _create_view(head: Any) -> Any:
    if type(head) is not list or len(head) != 2 or head[1] not in ("keys", "values", "items") \
            or type(head[0]) not in (dict, collections.OrderedDict, collections.defaultdict, collections.Counter):
        raise CorruptSnapshotError("malformed dict view in snapshot")
    mapping, which = head
    return getattr(type(mapping), which)(mapping)  # the dict type's own C method


kinds.add(Kind("dict-view", _encode_view, _create_view), *_VIEWS)
kinds.add(Kind("partial", _encode_partial, _create_partial), functools.partial)
kinds.add(Kind("builtin-method", objects.classified_elsewhere, _create_descriptor))
kinds.add(Kind("cmethod", objects.classified_elsewhere, _create_bound))
kinds.add(Kind("module", objects.classified_elsewhere, _create_module))
objects.FALLBACKS.extend([_classify_descriptor, _classify_bound, _classify_module])
