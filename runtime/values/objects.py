"""Kinds for user code: classes and functions by name, instances of allowed classes, bound methods.

Instances travel without running their code: an instance with ``__dict__`` and/or ``__slots__``
(plain classes, dataclasses, frozen or slotted ones) is rebuilt with ``object.__new__`` and its
attributes are set directly; a class defining ``__setstate__`` gets its ``__getstate__()`` value
back through ``__setstate__``. Only classes the allow-list permits (``runtime.allow``) are
carried; anything else is an unserializable value.
"""
from __future__ import annotations

import types
import weakref
from typing import Any, Callable

from ..errors import CorruptSnapshotError, NotAllowedError
from . import allow, bounds, kinds
from .kinds import INSTANCE, NO_BODY, Kind

Fallback = Callable[[Any], "tuple[str, Any, Any] | None"]

FALLBACKS: list[Fallback] = []
"""Classifiers tried in order for objects whose exact type has no kind (enum members, namedtuples, ...)."""


def classify(obj: Any) -> tuple[str, Any, Any] | None:
    """``(kind name, head, body)`` for an object a snapshot may carry, or None."""
    if _HANDLERS_GENERATION[0] != kinds.generation:  # the first call, or kinds/the allow-list changed
        kinds.load_standard()
        _HANDLERS.clear()
        _LOCAL_HANDLERS.clear()
        _HANDLERS_GENERATION[0] = kinds.generation
    handler = _HANDLERS.get(type(obj))
    if handler is not None:
        return handler(obj)
    kind = kinds.BY_TYPE.get(type(obj))
    if kind is not None:
        if type(obj) in kinds.USER_CODECS:
            head, body = _call_hook(kind.encode, obj, f"the codec registered for {type(obj).__qualname__}")
        else:
            head, body = kind.encode(obj)
        return kind.name, head, body
    for fallback in FALLBACKS:
        found = fallback(obj)
        if found is not None:
            return found
    return _classify_code_or_instance(obj)


Handler = Callable[[Any], "tuple[str, Any, Any]"]
_HANDLERS: dict[type, Handler] = {}
_LOCAL_HANDLERS: dict[type, Handler] = {}
"""The handlers of classes defined in functions, for one snapshot (``forget_local_classes``)."""
_HANDLERS_GENERATION = [-1]

RESTORED: weakref.WeakSet[type] = weakref.WeakSet()
"""Classes defined in functions that restore made again in this process (``class_kinds``): their
instances and bound methods may be rebuilt like those of allowed classes."""


def _carried_class(cls: type) -> bool:
    """True if instances of ``cls`` may travel: an allowed class, or one defined in a function of an
    allowed module (which then travels by value, ``class_kinds``)."""
    if allow.ref_of(cls) is not None:
        return True
    module = type.__getattribute__(cls, "__module__")
    return bounds.is_local(cls) and isinstance(module, str) and allow.module_allowed(module)


def _rebuildable_class(cls: type) -> bool:
    """True if restore may rebuild instances of ``cls``: an allowed class, or one it made itself."""
    return allow.ref_of(cls) is not None or cls in RESTORED


def create(name: str, head: Any) -> Any:
    kind = kinds.BY_NAME.get(name)
    if kind is None:
        kinds.load_standard()
        kind = kinds.BY_NAME.get(name)
    if kind is None:
        raise CorruptSnapshotError(f"snapshot holds a value of unknown kind {name!r} (a codec registered "
                                   "when it was taken is not registered now?)")
    return kind.create(head)


def fill(name: str, obj: Any, head: Any, body: Any) -> None:
    kind = kinds.BY_NAME[name]
    if kind.fill is None:
        raise CorruptSnapshotError(f"value of kind {name!r} has a body it does not take")
    kind.fill(obj, head, body)


def classified_elsewhere(obj: Any) -> tuple[Any, Any]:
    """The encode of kinds that ``classify`` (or a fallback) works out itself: they have no exact type."""
    raise TypeError(f"{type(obj).__qualname__} values are encoded through objects.classify")


# -- classes and functions by name ------------------------------------------------------------

def _classify_code_or_instance(obj: Any) -> tuple[str, Any, Any] | None:
    tp = type(obj)
    if tp is types.BuiltinFunctionType or tp is type:
        name = allow.safe_builtin(obj)
        if name is not None:
            return "builtin", name, NO_BODY
    if tp is types.FunctionType or tp is types.BuiltinFunctionType or isinstance(obj, type):
        ref = allow.ref_of(obj)  # (a built-in function of an allowed module: math.floor, operator.add)
        return ("ref", ref, NO_BODY) if ref is not None else None
    if tp is types.MethodType:
        return _method(obj)
    local = bounds.is_local(tp)
    handler = _LOCAL_HANDLERS.get(tp) if local else None
    if handler is None:
        handler = _instance_handler(tp)
        if handler is None:
            return None
        # decided by the class alone (allowed, plain layout, no fallback claimed it): remember
        (_LOCAL_HANDLERS if local else _HANDLERS)[tp] = handler
    return handler(obj)


def _create_builtin(name: Any) -> Any:
    if type(name) is not str:
        raise CorruptSnapshotError("malformed builtin reference")
    return allow.builtin(name)


def _create_ref(ref: Any) -> Any:
    if type(ref) is not str:
        raise CorruptSnapshotError("malformed class or function reference")
    obj = allow.resolve(ref)
    if not isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        raise CorruptSnapshotError(f"{ref!r} is not a class or function")
    return obj


def _create_global(head: Any) -> Any:
    if type(head) is not list or len(head) != 2 or not all(type(part) is str for part in head):
        raise CorruptSnapshotError("malformed reference to a module global")
    return allow.global_value(head[0], head[1])


kinds.add(Kind("builtin", classified_elsewhere, _create_builtin))
kinds.add(Kind(kinds.GLOBAL, classified_elsewhere, _create_global))
kinds.add(Kind("ref", classified_elsewhere, _create_ref))


# -- bound methods ----------------------------------------------------------------------------

def _method(method: types.MethodType) -> tuple[str, Any, Any] | None:
    func = method.__func__
    name = getattr(func, "__name__", None)
    owner = method.__self__
    klass = owner if isinstance(owner, type) else type(owner)
    if not isinstance(name, str) or _lookup_function(klass, name) is not func:
        return None
    return "method", [owner, name], NO_BODY


def _lookup_function(klass: type, name: str) -> Any:
    """The plain function ``name`` defined in ``klass`` or a base (unwrapping classmethod), without getattr."""
    for base in klass.__mro__:
        if name in base.__dict__:
            found = base.__dict__[name]
            found = getattr(found, "__func__", found) if isinstance(found, classmethod) else found
            return found if type(found) is types.FunctionType else None
    return None


def _create_method(head: Any) -> Any:
    if type(head) is not list or len(head) != 2 or type(head[1]) is not str:
        raise CorruptSnapshotError("malformed bound method")
    owner, name = head
    klass = owner if isinstance(owner, type) else type(owner)
    if not _rebuildable_class(klass):
        raise CorruptSnapshotError(f"bound method {name!r} of a class restore does not allow")
    func = _lookup_function(klass, name)
    if func is None:
        raise CorruptSnapshotError(f"bound method {name!r} does not exist on {klass.__qualname__}")
    return types.MethodType(func, owner)


kinds.add(Kind("method", classified_elsewhere, _create_method))


# -- instances of allowed classes -------------------------------------------------------------

class Layout:
    """Which attributes the instances of one class carry, in order: travels once per snapshot."""

    __slots__ = ("cls", "dict_names", "slot_names", "size")

    def __init__(self, cls: type, dict_names: tuple[str, ...], slot_names: tuple[str, ...]) -> None:
        self.cls = cls
        self.dict_names = dict_names
        self.slot_names = slot_names
        self.size = len(dict_names) + len(slot_names)


_LayoutKey = tuple[type, tuple[str, ...], tuple[str, ...]]
_layouts: dict[_LayoutKey, Layout] = {}
_local_layouts: dict[_LayoutKey, Layout] = {}
_IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: set on every class written in C, never on a Python class
_slot_tables: dict[type, dict[str, Any] | None] = {}
_local_slot_tables: dict[type, dict[str, Any] | None] = {}


def forget_local_classes() -> None:
    """Drop what was remembered about classes defined in functions (done after each snapshot and
    restore): a program makes such classes at run time, any number of them, and these tables, which
    refer to them, must not keep them alive."""
    if _LOCAL_HANDLERS or _local_layouts or _local_slot_tables:
        _LOCAL_HANDLERS.clear()
        _local_layouts.clear()
        _local_slot_tables.clear()


def _layout(key: _LayoutKey) -> Layout:
    """The one ``Layout`` of a class and its attribute names (for a class defined in a function: in this
    snapshot)."""
    layout = _layouts.get(key)
    if layout is None:
        table = _local_layouts if bounds.is_local(key[0]) else _layouts
        layout = table.get(key)
        if layout is None:
            layout = table[key] = Layout(*key)
    return layout


def _slots_of(cls: type) -> dict[str, Any] | None:
    """The ``__slots__`` of ``cls`` and its bases, each with the member descriptor that stores it (the
    codec reads and writes slots through them, so no property or ``__setattr__`` of the class runs);
    None when the instance layout is not plain: a builtin base (dict, int, ...) holds state we cannot
    see, or a class replaced a slot or ``__dict__`` with a descriptor of its own."""
    if cls in _slot_tables:
        return _slot_tables[cls]
    local = bounds.is_local(cls)
    if local and cls in _local_slot_tables:
        return _local_slot_tables[cls]
    found: dict[str, Any] | None = {}
    for klass in type.__getattribute__(cls, "__mro__")[:-1]:  # all but object
        namespace = type.__getattribute__(klass, "__dict__")
        if type.__getattribute__(klass, "__flags__") & _IMMUTABLE_TYPE:
            found = None  # a class written in C (dict, int, re.Pattern, ...) holds state we cannot see
            break
        declared = namespace.get("__slots__", ())
        for name in (declared,) if isinstance(declared, str) else declared:
            name = mangle(klass, name)
            if name in ("__dict__", "__weakref__") or name in found:
                continue
            if type(namespace.get(name)) is not types.MemberDescriptorType:
                found = None
                break
            found[name] = namespace[name]
        if found is None:
            break
    dict_attr = bounds.class_attr(cls, "__dict__")
    if dict_attr is not None and type(dict_attr) is not types.GetSetDescriptorType:
        found = None
    (_local_slot_tables if local else _slot_tables)[cls] = found
    return found


def mangle(klass: type, name: str) -> str:
    """``name`` as Python stores a private name (``__x``) declared in ``klass``."""
    if name.startswith("__") and not name.endswith("__"):
        return f"_{type.__getattribute__(klass, '__name__').lstrip('_')}{name}"
    return name


def _instance_handler(cls: type) -> Handler | None:
    """How instances of ``cls`` travel, if it is an allowed class (or one defined in a function) with a
    plain layout."""
    if not _carried_class(cls):
        return None
    slots = _slots_of(cls)
    if slots is None:
        return None
    finalizer = bounds.finalizer(cls)
    if finalizer is not None:
        return lambda obj: _refuse(f"is not supported: its class defines {finalizer}, which would run for the "
                                   "original and again for the restored copy (and restore never builds objects "
                                   "whose finalizer would run on snapshot data); define __setstate__ to opt in")
    if bounds.own_method(cls, "__setstate__") is not None:
        get_state = bounds.own_method(cls, "__getstate__")
        if get_state is not None:
            return lambda obj: ("state", cls, _call_hook(get_state, obj, f"{get_state.__qualname__}()"))
        return lambda obj: ("state", cls, _default_state(obj, slots))
    if not slots:
        return _plain_instance
    return lambda obj: _slotted_instance(obj, slots)


def _refuse(reason: str) -> Any:
    raise kinds.Unsupported(reason)


def _call_hook(hook: Callable[[Any], Any], obj: Any, what: str) -> Any:
    """A class's own snapshot hook (``__getstate__``, a codec's encode); its failure is an unserializable value."""
    try:
        return hook(obj)
    except Exception as exc:  # noqa: BLE001 - whatever the user's hook raises names the value that failed
        raise kinds.Unsupported(f"cannot be carried: {what} raised {type(exc).__name__}: {exc}") from None


def _plain_instance(obj: Any) -> tuple[str, Any, Any]:
    attrs = obj.__dict__
    key = (type(obj), tuple(attrs), ())
    layout = _layouts.get(key) or _layout(key)
    return INSTANCE, layout, list(attrs.values())


def plain_instances(cls: type) -> bool:
    """True once instances of ``cls`` were classified as plain ``__dict__`` instances (see the codec's fast path)."""
    return _HANDLERS.get(cls) is _plain_instance and _HANDLERS_GENERATION[0] == kinds.generation


def plain_layout(layout: object) -> tuple[type, tuple[str, ...]] | None:
    """The class and attribute names of a decoded layout whose instances hold only ``__dict__`` values
    (and whose ``__dict__`` can be read without running a ``__getattribute__`` of the class)."""
    if type(layout) is Layout and not layout.slot_names and layout.dict_names \
            and bounds.class_attr(layout.cls, "__getattribute__") is _OBJECT_GETATTRIBUTE:
        return layout.cls, layout.dict_names
    return None


_OBJECT_GETATTRIBUTE = object.__dict__["__getattribute__"]


def _slot_values(obj: Any, slots: dict[str, Any]) -> dict[str, Any]:
    """The slots of ``obj`` that are set, read through their member descriptors."""
    values = {}
    for name, member in slots.items():
        try:
            values[name] = member.__get__(obj, type(obj))
        except AttributeError:
            continue
    return values


def _slotted_instance(obj: Any, slots: dict[str, Any]) -> tuple[str, Any, Any]:
    attrs = getattr(obj, "__dict__", None)
    slot_values = _slot_values(obj, slots)
    layout = _layout((type(obj), tuple(attrs) if attrs else (), tuple(slot_values)))
    values = list(attrs.values()) if attrs else []
    values.extend(slot_values.values())
    return INSTANCE, layout, values


def _default_state(obj: Any, slots: dict[str, Any]) -> Any:
    """What ``object.__getstate__`` returns on 3.11+, also on 3.10."""
    attrs = getattr(obj, "__dict__", None)
    slot_values = _slot_values(obj, slots)
    if slot_values:
        return (attrs or None, slot_values)
    return attrs or None


def _allowed_class(cls: Any) -> type:
    if not isinstance(cls, type) or not _rebuildable_class(cls):
        raise CorruptSnapshotError("snapshot holds an instance of a class restore does not allow")
    if _slots_of(cls) is None:
        raise CorruptSnapshotError(f"cannot rebuild an instance of {type.__getattribute__(cls, '__qualname__')}")
    finalizer = bounds.finalizer(cls)
    if finalizer is not None:
        raise NotAllowedError(f"snapshot holds an instance of a class that defines {finalizer}; restore never "
                              "builds objects whose finalizer would run on snapshot data")
    return cls


def _encode_layout(layout: Layout) -> tuple[Any, Any]:
    return [layout.cls, list(layout.dict_names), list(layout.slot_names)], NO_BODY


def _create_layout(head: Any) -> Layout:
    if not (type(head) is list and len(head) == 3 and type(head[1]) is list and type(head[2]) is list
            and all(type(n) is str for n in head[1]) and all(type(n) is str for n in head[2])):
        raise CorruptSnapshotError("malformed object layout")
    cls = _allowed_class(head[0])
    name = type.__getattribute__(cls, "__qualname__")
    if head[1] and type.__getattribute__(cls, "__dictoffset__") == 0:
        raise CorruptSnapshotError(f"object layout names attributes {name} has no room for")
    if head[2] and not set(head[2]).issubset(_slots_of(cls)):  # type: ignore[arg-type]
        # setting any other name would run a descriptor (a property setter, say) of the class
        raise CorruptSnapshotError(f"object layout names slots {name} does not have")
    return Layout(cls, tuple(head[1]), tuple(head[2]))


def _create_instance(layout: Any) -> Any:
    if type(layout) is not Layout:
        raise CorruptSnapshotError("malformed object: no layout")
    return object.__new__(layout.cls)


def _fill_instance(obj: Any, layout: Layout, values: Any) -> None:
    if len(values) != layout.size:
        raise CorruptSnapshotError("object attributes do not match its layout")
    if layout.slot_names:
        slots = _slots_of(layout.cls)
        for name, value in zip(layout.slot_names, values[len(layout.dict_names):]):
            slots[name].__set__(obj, value)  # type: ignore[index]  # the member itself: frozen dataclasses too
        values = values[:len(layout.dict_names)]
    if values:
        object.__getattribute__(obj, "__dict__").update(zip(layout.dict_names, values))


def _create_stateful(cls: Any) -> Any:
    cls = _allowed_class(cls)
    if bounds.own_method(cls, "__setstate__") is None:
        raise CorruptSnapshotError(f"snapshot gives a state to {type.__getattribute__(cls, '__qualname__')}, which "
                                   "defines no __setstate__")
    return object.__new__(cls)


def _fill_stateful(obj: Any, cls: Any, state: Any) -> None:
    bounds.own_method(type(obj), "__setstate__")(obj, state)  # type: ignore[misc]  # the class opted in


kinds.add(Kind("layout", _encode_layout, _create_layout), Layout)
kinds.add(Kind(INSTANCE, classified_elsewhere, _create_instance, _fill_instance))
kinds.add(Kind("state", classified_elsewhere, _create_stateful, _fill_stateful))
