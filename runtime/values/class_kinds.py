"""Classes defined inside functions as values (kind "local-class"), and the method wrappers a class body
holds (``staticmethod``, ``classmethod``, ``property``).

A class made by a ``class`` statement in a function of a compiled (or allowed) module has no name a
snapshot can refer to, so it travels by value: its name, bases and ``__slots__`` (the head), then its
namespace (the body: functions travel as nested functions, by their place in the module's code, never
as code from the snapshot). Restore makes it again with ``type(name, bases, namespace)`` and sets the
namespace afterwards, so that a method's ``__class__`` cell (``super()``) can refer to the class:

* only the metaclass ``type``, and bases whose ``__init_subclass__`` is ``object``'s, so that making the
  class runs no code of the program;
* attributes are set with ``type.__setattr__``: no ``__set_name__`` runs; names that ``type`` itself
  handles (``__bases__``, ``__class__``, ``__abstractmethods__``, ...) are refused, as is a finalizer;
* instances of such a class travel like those of allowed classes, and restore rebuilds them once it
  made the class itself (``objects.RESTORED``).
"""
from __future__ import annotations

from typing import Any

from ..errors import CorruptSnapshotError, NotAllowedError
from . import allow, bounds, kinds, objects
from .kinds import NO_BODY, Kind

_KEPT_BY_TYPE = frozenset({"__module__", "__qualname__", "__dict__", "__weakref__", "__slots__"})
"""Namespace entries ``type()`` makes itself (or the head carries)."""

_REFUSED = frozenset(name for name, value in vars(type).items() if hasattr(type(value), "__set__")) \
    - {"__doc__", "__annotations__"} | {"__class__", "__del__", "__init_subclass__", "__set_name__"}
"""Names the namespace of a restored class may not set: what ``type`` handles itself (its bases, its MRO,
its metaclass), a finalizer, and hooks that run when classes are made."""


def _refuse(reason: str) -> Any:
    raise kinds.Unsupported(reason)


def _classify_local_class(obj: Any) -> tuple[str, Any, Any] | None:
    if not isinstance(obj, type) or not bounds.is_local(obj):
        return None
    name = type.__getattribute__(obj, "__qualname__")
    if type(obj) is not type:
        _refuse(f"is not supported: class {name} is defined in a function and has the metaclass "
                f"{type(obj).__qualname__}; only classes made by `type` travel by value")
    module = type.__getattribute__(obj, "__module__")
    if not isinstance(module, str) or not allow.module_allowed(module):
        _refuse(f"is not supported: class {name} is defined in a function of module {module!r}, which is not "
                "compiled or allowed (runtime.allow_modules)")
    bases = type.__getattribute__(obj, "__bases__")
    hook = _subclass_hook(bases)
    if hook is not None:
        _refuse(f"is not supported: class {name} is defined in a function and its base {hook} defines "
                "__init_subclass__, which would run again when restore makes the class")
    namespace = type.__getattribute__(obj, "__dict__")
    slots = namespace.get("__slots__")
    slot_names = _slot_names(slots)
    if slot_names is None:
        _refuse(f"is not supported: class {name} is defined in a function with __slots__ that are not strs")
    members = _slot_members(obj, slot_names)
    body = {}
    for key, value in namespace.items():
        if key in _KEPT_BY_TYPE or key in members:
            continue
        if key in _REFUSED:
            _refuse(f"is not supported: class {name} is defined in a function and defines {key}, which "
                    "restore never sets on a class it makes")
        body[key] = value
    head = [type.__getattribute__(obj, "__name__"), name, module, bases, list(slot_names) if slots is not None
            else None]
    return "local-class", head, body


def _slot_names(slots: Any) -> tuple[str, ...] | None:
    if slots is None:
        return ()
    names = (slots,) if isinstance(slots, str) else tuple(slots) if isinstance(slots, (tuple, list)) else None
    if names is None or not all(type(n) is str for n in names):
        return None
    return names


def _slot_members(cls: type, slots: Any) -> set[str]:
    """The names under which ``type()`` stored the member descriptors of ``slots`` (private ones mangled)."""
    return {objects.mangle(cls, name) for name in slots or ()}


def _subclass_hook(bases: tuple[type, ...]) -> str | None:
    """The qualname of a base (or a base's base) that defines ``__init_subclass__``, if any."""
    for base in bases:
        for klass in type.__getattribute__(base, "__mro__")[:-1]:
            if "__init_subclass__" in type.__getattribute__(klass, "__dict__"):
                return type.__getattribute__(klass, "__qualname__")
    return None


def _create_local_class(head: Any) -> type:
    if not (type(head) is list and len(head) == 5 and type(head[0]) is str and type(head[1]) is str
            and type(head[2]) is str and type(head[3]) is tuple
            and (head[4] is None or (type(head[4]) is list and all(type(n) is str for n in head[4])))):
        raise CorruptSnapshotError("malformed class defined in a function")
    name, qualname, module, bases, slots = head
    if not name.isidentifier() or "<locals>" not in qualname:
        raise CorruptSnapshotError("malformed class defined in a function")
    if not allow.module_allowed(module):
        raise NotAllowedError(f"snapshot holds class {qualname} of module {module!r}, which is not allowed "
                              "(runtime.allow_modules)")
    for base in bases:
        if not isinstance(base, type) or type(base) is not type:
            raise CorruptSnapshotError(f"class {qualname} in the snapshot has a base that is not a plain class")
    if _subclass_hook(bases) is not None:
        raise NotAllowedError(f"snapshot holds class {qualname}, whose base defines __init_subclass__; restore "
                              "never runs it")
    namespace: dict[str, Any] = {"__module__": module, "__qualname__": qualname}
    if slots is not None:
        namespace["__slots__"] = tuple(slots)
    try:
        cls = type(name, bases, namespace)  # (metaclass type, no __init_subclass__, no __set_name__: runs no code)
    except TypeError as exc:  # bases whose layouts conflict, slots that clash, ...
        raise CorruptSnapshotError(f"cannot make class {qualname} from the snapshot: {exc}") from None
    objects.RESTORED.add(cls)
    return cls


def _fill_local_class(cls: Any, head: Any, body: Any) -> None:
    if type(body) is not dict or not all(type(k) is str for k in body):
        raise CorruptSnapshotError("malformed namespace of a class defined in a function")
    members = _slot_members(cls, head[4])
    for key, value in body.items():
        if key in _REFUSED or key in _KEPT_BY_TYPE or key in members:
            raise NotAllowedError(f"snapshot sets {key} on class {head[1]}, which restore never does")
        type.__setattr__(cls, key, value)


kinds.add(Kind("local-class", objects.classified_elsewhere, _create_local_class, _fill_local_class))
objects.FALLBACKS.append(_classify_local_class)


# -- what class bodies hold ----------------------------------------------------------------------

def _create_wrapper(wrapper: type) -> Any:
    def create(head: Any) -> Any:
        if type(head) is not list or len(head) != 1:
            raise CorruptSnapshotError(f"malformed {wrapper.__name__}")
        return wrapper(head[0])  # stores the callable; calls nothing
    return create


def _encode_property(prop: property) -> tuple[Any, Any]:
    if type(prop) is not property:
        raise TypeError("not a property")
    doc = prop.__doc__
    getter_doc = getattr(prop.fget, "__doc__", None) if prop.fget is not None else None
    return [prop.fget, prop.fset, prop.fdel, None if doc == getter_doc else doc], NO_BODY


def _create_property(head: Any) -> property:
    if type(head) is not list or len(head) != 4 or not (head[3] is None or type(head[3]) is str):
        raise CorruptSnapshotError("malformed property")
    return property(*head)


kinds.add(Kind("staticmethod", lambda sm: ([sm.__func__], NO_BODY), _create_wrapper(staticmethod)), staticmethod)
kinds.add(Kind("classmethod", lambda cm: ([cm.__func__], NO_BODY), _create_wrapper(classmethod)), classmethod)
kinds.add(Kind("property", _encode_property, _create_property), property)
