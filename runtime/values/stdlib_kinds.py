"""Value kinds for standard-library values: datetime, decimal, fractions, uuid, pathlib, collections, enums, ..."""
from __future__ import annotations

import collections
import datetime
import decimal
import enum
import fractions
import pathlib
import re
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

from . import allow, bounds, kinds, objects, settings
from ..errors import CorruptSnapshotError
from .kinds import NO_BODY, Kind


def _corrupt(name: str, detail: str = "malformed head") -> CorruptSnapshotError:
    return CorruptSnapshotError(f"malformed snapshot value of kind {name!r}: {detail}")


def _is_int(x: Any) -> bool:
    return type(x) is int


def _fields(name: str, head: Any, count: int) -> list[Any]:
    """``head`` as a list of ``count`` parts, or CorruptSnapshotError."""
    if type(head) is not list or len(head) != count:
        raise _corrupt(name)
    return head


def _ints(name: str, parts: list[Any]) -> None:
    if not all(_is_int(x) for x in parts):
        raise _corrupt(name, "expected integers")


def _build(name: str, make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``make(*args, **kwargs)`` with its refusal of bad arguments turned into CorruptSnapshotError."""
    try:
        return make(*args, **kwargs)
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        raise _corrupt(name, str(exc)) from None


def _one_phase(name: str, tp: type, encode: Callable[[Any], Any], create: Callable[[Any], Any]) -> None:
    kinds.add(Kind(name, lambda obj: (encode(obj), NO_BODY), create), tp)


# -- datetime ---------------------------------------------------------------------------------

def _tzinfo(name: str, tz: Any) -> Any:
    if tz is not None and not isinstance(tz, datetime.tzinfo):
        raise _corrupt(name, "tzinfo is not a tzinfo")
    return tz


def _fold(name: str, fold: Any) -> int:
    if not _is_int(fold) or fold not in (0, 1):  # the type first: comparing runs the value's __eq__
        raise _corrupt(name, "fold must be 0 or 1")
    return fold


def _create_datetime(head: Any) -> datetime.datetime:
    parts = _fields("datetime", head, 9)
    _ints("datetime", parts[:7])
    return _build("datetime", datetime.datetime, *parts[:7], tzinfo=_tzinfo("datetime", parts[7]),
                  fold=_fold("datetime", parts[8]))


def _create_date(head: Any) -> datetime.date:
    parts = _fields("date", head, 3)
    _ints("date", parts)
    return _build("date", datetime.date, *parts)


def _create_time(head: Any) -> datetime.time:
    parts = _fields("time", head, 6)
    _ints("time", parts[:4])
    return _build("time", datetime.time, *parts[:4], tzinfo=_tzinfo("time", parts[4]), fold=_fold("time", parts[5]))


def _create_timedelta(head: Any) -> datetime.timedelta:
    parts = _fields("timedelta", head, 3)
    _ints("timedelta", parts)
    return _build("timedelta", datetime.timedelta, *parts)


def _encode_timezone(tz: datetime.timezone) -> list[Any]:
    args = tz.__getinitargs__()  # (offset,) or (offset, name): tells an explicit name from the default one
    return [args[0], args[1] if len(args) > 1 else None]


def _create_timezone(head: Any) -> datetime.timezone:
    offset, name = _fields("timezone", head, 2)
    if type(offset) is not datetime.timedelta or (name is not None and type(name) is not str):
        raise _corrupt("timezone")
    if name is None:
        return _build("timezone", datetime.timezone, offset)  # offset 0 gives back timezone.utc itself
    return _build("timezone", datetime.timezone, offset, name)


_ZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


def _create_zoneinfo(key: Any) -> zoneinfo.ZoneInfo:
    if type(key) is not str or len(key) > 255 or not _ZONE_KEY.fullmatch(key):
        raise _corrupt("zoneinfo", "bad zone key")
    try:
        return zoneinfo.ZoneInfo(key)  # a key is data: zoneinfo rejects paths that leave the tz database
    except Exception as exc:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, OSError, ...
        raise _corrupt("zoneinfo", f"no time zone {key!r} here ({type(exc).__name__})") from None


def _classify_zoneinfo(obj: Any) -> tuple[str, Any, Any] | None:
    """Only zones made from a key travel (``ZoneInfo.from_file`` ones have no key to rebuild them by)."""
    if type(obj) is zoneinfo.ZoneInfo and isinstance(obj.key, str):
        return "zoneinfo", obj.key, NO_BODY
    return None


_one_phase("datetime", datetime.datetime,
           lambda d: [d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, d.tzinfo, d.fold],
           _create_datetime)
_one_phase("date", datetime.date, lambda d: [d.year, d.month, d.day], _create_date)
_one_phase("time", datetime.time,
           lambda t: [t.hour, t.minute, t.second, t.microsecond, t.tzinfo, t.fold], _create_time)
_one_phase("timedelta", datetime.timedelta, lambda t: [t.days, t.seconds, t.microseconds], _create_timedelta)
_one_phase("timezone", datetime.timezone, _encode_timezone, _create_timezone)
kinds.add(Kind("zoneinfo", objects.classified_elsewhere, _create_zoneinfo))  # see _classify_zoneinfo


# -- numbers, ids, paths ----------------------------------------------------------------------

def _create_decimal(text: Any) -> decimal.Decimal:
    if type(text) is not str:
        raise _corrupt("decimal")
    value = _build("decimal", decimal.Decimal, text)  # exact: the constructor never rounds
    if str(value) != text:  # also refuses text that a context without traps would read as NaN
        raise _corrupt("decimal", "not a decimal's canonical text")
    return value


def _create_fraction(head: Any) -> fractions.Fraction:
    """A Fraction from the numerator and denominator it had, without computing their gcd again (the
    gcd of n-digit ints costs O(n**2): a crafted 1.6 MB Fraction took 37 s). A crafted snapshot can
    thus give a fraction that is not in lowest terms: wrong data, as any value it chooses, never code."""
    parts = _fields("fraction", head, 2)
    _ints("fraction", parts)
    if parts[1] <= 0:
        raise _corrupt("fraction", "denominator must be positive")
    return _from_coprime(*parts)


def _fraction_from_coprime() -> Callable[[int, int], fractions.Fraction]:
    made = getattr(fractions.Fraction, "_from_coprime_ints", None)  # 3.12+
    if made is not None:
        return made  # type: ignore[no-any-return]
    return lambda n, d: fractions.Fraction(n, d, _normalize=False)  # type: ignore[call-arg]  # 3.10, 3.11


_from_coprime = _fraction_from_coprime()


_SAFE_UUID_VALUES = {member.value: member for member in uuid.SafeUUID}


def _create_uuid(head: Any) -> uuid.UUID:
    raw, safe = _fields("uuid", head, 2)
    if type(raw) is not bytes or len(raw) != 16 or type(safe) not in (int, type(None)) or safe not in _SAFE_UUID_VALUES:
        raise _corrupt("uuid")
    return uuid.UUID(bytes=raw, is_safe=_SAFE_UUID_VALUES[safe])


def _create_complex(head: Any) -> complex:
    parts = _fields("complex", head, 2)
    if not all(type(x) is float for x in parts):
        raise _corrupt("complex", "expected floats")
    return complex(*parts)


def _path_kind(name: str, cls: type) -> None:
    def create(text: Any) -> Any:
        if type(text) is not str:
            raise _corrupt(name)
        try:
            return cls(text)
        except Exception as exc:  # noqa: BLE001 - e.g. a WindowsPath cannot be made on a POSIX system
            raise _corrupt(name, f"cannot make a {cls.__name__} here ({exc})") from None

    _one_phase(name, cls, str, create)


_one_phase("decimal", decimal.Decimal, str, _create_decimal)
_one_phase("fraction", fractions.Fraction, lambda f: [f.numerator, f.denominator], _create_fraction)
_one_phase("uuid", uuid.UUID, lambda u: [u.bytes, u.is_safe.value], _create_uuid)
_one_phase("complex", complex, lambda c: [c.real, c.imag], _create_complex)
for _name, _cls in (("purepath.posix", pathlib.PurePosixPath), ("purepath.windows", pathlib.PureWindowsPath),
                    ("path.posix", pathlib.PosixPath), ("path.windows", pathlib.WindowsPath)):
    _path_kind(_name, _cls)


# -- bytes-like, range, slice, Ellipsis -------------------------------------------------------

def _create_bytearray(data: Any) -> bytearray:
    if type(data) is not bytes:
        raise _corrupt("bytearray")
    return bytearray(data)


def _create_memoryview(data: Any) -> bytes:
    """A memoryview travels as the bytes it shows and comes back as ``bytes`` (its buffer's owner is not carried)."""
    if type(data) is not bytes:
        raise _corrupt("memoryview")
    return data


def _classify_memoryview(obj: Any) -> tuple[str, Any, Any] | None:
    if type(obj) is memoryview:
        try:
            return "memoryview", obj.tobytes(), NO_BODY
        except ValueError:  # released
            return None
    return None


def _create_range(head: Any) -> range:
    parts = _fields("range", head, 3)
    _ints("range", parts)
    return _build("range", range, *parts)


def _create_slice(head: Any) -> slice:
    return slice(*_fields("slice", head, 3))


def _create_ellipsis(head: Any) -> Any:
    if head is not None:
        raise _corrupt("ellipsis")
    return Ellipsis


# -- compiled regular expressions --------------------------------------------------------------

_PATTERN_FLAGS = re.ASCII | re.IGNORECASE | re.LOCALE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE
"""The flags a snapshot may give a pattern (not ``re.DEBUG``, which prints while compiling)."""
PATTERN_WORK_PER_CHAR = 64
"""Budget units charged per character of a pattern restore compiles (``bounds``): compiling costs about
1.2 µs per character, as much as the costliest bytes of a snapshot to decode."""
PATTERN_MAX_CHARS = 1 << 16
"""The longest pattern restore compiles (``re`` keeps the last few hundred compiled patterns)."""


def _create_pattern(head: Any) -> re.Pattern[Any]:
    pattern, flags = _fields("re-pattern", head, 2)
    if type(pattern) not in (str, bytes) or not _is_int(flags) or flags & ~_PATTERN_FLAGS:
        raise _corrupt("re-pattern")
    if len(pattern) > PATTERN_MAX_CHARS:
        raise _corrupt("re-pattern", f"a pattern of {len(pattern):,} characters (at most {PATTERN_MAX_CHARS:,})")
    bounds.current().charge(PATTERN_WORK_PER_CHAR * len(pattern), "compiling a regular expression")
    try:
        return re.compile(pattern, flags)  # parses and compiles the text: runs no code the snapshot names
    except (re.error, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise _corrupt("re-pattern", f"{type(exc).__name__}: {exc}") from None


_one_phase("re-pattern", re.Pattern, lambda p: [p.pattern, p.flags], _create_pattern)
_one_phase("bytearray", bytearray, bytes, _create_bytearray)
kinds.add(Kind("memoryview", objects.classified_elsewhere, _create_memoryview))  # see _classify_memoryview
_one_phase("range", range, lambda r: [r.start, r.stop, r.step], _create_range)
_one_phase("slice", slice, lambda s: [s.start, s.stop, s.step], _create_slice)
_one_phase("ellipsis", type(Ellipsis), lambda e: None, _create_ellipsis)


# -- collections ------------------------------------------------------------------------------
# Mutable containers are two-phase: made empty from the head, filled from the body, so they may
# contain themselves. OrderedDict, Counter and ChainMap instances may also hold attributes of their
# own (``__dict__``): they travel in the head of the first two and are the body of a ChainMap.

def _attrs(name: str, attrs: Any) -> dict[str, Any]:
    if attrs is None:
        return {}
    if type(attrs) is not dict or not all(type(k) is str for k in attrs):
        raise _corrupt(name, "bad attributes")
    return attrs


def _with_attrs(obj: Any, attrs: dict[str, Any]) -> Any:
    if attrs:
        obj.__dict__.update(attrs)
    return obj


def _items(name: str, body: Any) -> dict[Any, Any]:
    if type(body) is not dict:
        raise _corrupt(name, "malformed body")
    return body


def _create_deque(maxlen: Any) -> collections.deque[Any]:
    if maxlen is not None and (not _is_int(maxlen) or maxlen < 0):
        raise _corrupt("deque", "bad maxlen")
    return collections.deque(maxlen=maxlen)


def _fill_deque(obj: collections.deque[Any], maxlen: Any, body: Any) -> None:
    if type(body) is not list or (maxlen is not None and len(body) > maxlen):
        raise _corrupt("deque", "malformed body")
    obj.extend(body)


def _create_ordered_dict(attrs: Any) -> collections.OrderedDict[Any, Any]:
    return _with_attrs(collections.OrderedDict(), _attrs("ordereddict", attrs))


def _fill_ordered_dict(obj: collections.OrderedDict[Any, Any], head: Any, body: Any) -> None:
    obj.update(_items("ordereddict", body))  # OrderedDict's own update keeps its order links


def _create_counter(attrs: Any) -> collections.Counter[Any]:
    return _with_attrs(collections.Counter(), _attrs("counter", attrs))


def _fill_counter(obj: collections.Counter[Any], head: Any, body: Any) -> None:
    dict.update(obj, _items("counter", body))  # Counter.update would add counts


def _create_defaultdict(factory: Any) -> collections.defaultdict[Any, Any]:
    if factory is not None and not callable(factory):
        raise _corrupt("defaultdict", "default_factory is not callable")
    return collections.defaultdict(factory)


def _fill_defaultdict(obj: collections.defaultdict[Any, Any], head: Any, body: Any) -> None:
    dict.update(obj, _items("defaultdict", body))


def _create_chain_map(head: Any) -> collections.ChainMap[Any, Any]:
    if head is not None:
        raise _corrupt("chainmap")
    return collections.ChainMap()


def _fill_chain_map(obj: collections.ChainMap[Any, Any], head: Any, body: Any) -> None:
    attrs = _attrs("chainmap", body)
    if type(attrs.get("maps")) is not list:
        raise _corrupt("chainmap", "maps is not a list")
    obj.__dict__.clear()
    obj.__dict__.update(attrs)


def _own_attrs(obj: Any) -> dict[str, Any] | None:
    return dict(obj.__dict__) or None


kinds.add(Kind("deque", lambda d: (d.maxlen, list(d)), _create_deque, _fill_deque), collections.deque)
kinds.add(Kind("ordereddict", lambda d: (_own_attrs(d), dict(d)), _create_ordered_dict, _fill_ordered_dict),
          collections.OrderedDict)
kinds.add(Kind("counter", lambda d: (_own_attrs(d), dict(d)), _create_counter, _fill_counter), collections.Counter)
kinds.add(Kind("defaultdict", lambda d: (d.default_factory, dict(d)), _create_defaultdict, _fill_defaultdict),
          collections.defaultdict)
kinds.add(Kind("chainmap", lambda c: (None, dict(c.__dict__)), _create_chain_map, _fill_chain_map),
          collections.ChainMap)


# -- enum members and named tuples of allowed classes -----------------------------------------

def _allowed(name: str, cls: Any, base: type) -> type:
    if not isinstance(cls, type) or not issubclass(cls, base) or allow.ref_of(cls) is None:
        raise CorruptSnapshotError(f"snapshot holds a value of kind {name!r} of a class restore does not allow")
    return cls


def _classify_enum_member(obj: Any) -> tuple[str, Any, Any] | None:
    cls = type(obj)
    if not (isinstance(obj, enum.Enum) and allow.ref_of(cls) is not None):
        return None
    if isinstance(obj, enum.Flag):
        return "enum", [cls, obj._value_], NO_BODY  # composite flags have no name of their own
    if bounds.class_attr(cls, "_member_map_", {}).get(obj._name_) is not obj:
        raise kinds.Unsupported("is not supported: an enum member that is not among its class's members "
                                "(made by the class's own _missing_)")
    return "enum-name", [cls, obj._name_], NO_BODY


def _create_enum_by_name(head: Any) -> enum.Enum:
    cls, name = _fields("enum-name", head, 2)
    cls = _allowed("enum-name", cls, enum.Enum)
    member = bounds.class_attr(cls, "_member_map_", {}).get(name) if type(name) is str else None
    if member is None:
        raise _corrupt("enum-name", f"{type.__getattribute__(cls, '__qualname__')} has no member {name!r}")
    return member  # type: ignore[no-any-return]


_STDLIB_MISSING = {vars(klass)["_missing_"] for klass in (enum.Flag, enum.IntFlag) if "_missing_" in vars(klass)}


def _create_enum_member(head: Any) -> enum.Enum:
    """A member by value (flags, and snapshots written before members travelled by name): looked up in
    the class's table; a composite flag is made by the standard library's own ``Flag._missing_``.
    The class's own ``_missing_``, ``__new__`` or metaclass ``__call__`` never run."""
    cls, value = _fields("enum", head, 2)
    cls = _allowed("enum", cls, enum.Enum)
    bounds.check_keys([value], bounds.HashCheck(settings.current.max_depth), bounds.current(),
                      "an enum member's value")
    member = bounds.class_attr(cls, "_value2member_map_", {}).get(value)
    if member is not None:
        return member  # type: ignore[no-any-return]
    if type(value) is int and issubclass(cls, enum.Flag) and bounds.class_attr(cls, "_missing_") in _STDLIB_MISSING \
            and bounds.class_attr(type(cls), "__call__") is vars(enum.EnumMeta)["__call__"] \
            and bounds.class_attr(cls, "_member_type_") in (object, int):
        return _build("enum", cls, value)  # type: ignore[no-any-return]
    raise _corrupt("enum", f"{type.__getattribute__(cls, '__qualname__')} has no member with value {value!r}")


def _is_named_tuple_class(cls: type) -> bool:
    return issubclass(cls, tuple) and cls is not tuple and isinstance(bounds.class_attr(cls, "_fields"), tuple)


def _classify_named_tuple(obj: Any) -> tuple[str, Any, Any] | None:
    cls = type(obj)
    if isinstance(obj, tuple) and _is_named_tuple_class(cls) and not getattr(obj, "__dict__", None) \
            and allow.ref_of(cls) is not None:
        return "namedtuple", [cls, tuple(obj)], NO_BODY
    return None


def _create_named_tuple(head: Any) -> tuple[Any, ...]:
    cls, values = _fields("namedtuple", head, 2)
    cls = _allowed("namedtuple", cls, tuple)
    if not _is_named_tuple_class(cls) or type(values) is not tuple or len(values) != len(bounds.class_attr(cls, "_fields")):
        raise _corrupt("namedtuple", "values do not match the fields")
    return tuple.__new__(cls, values)  # no user __new__/__init__ runs


kinds.add(Kind("enum", objects.classified_elsewhere, _create_enum_member))
kinds.add(Kind("enum-name", objects.classified_elsewhere, _create_enum_by_name))
kinds.add(Kind("namedtuple", objects.classified_elsewhere, _create_named_tuple))
objects.FALLBACKS.extend([_classify_zoneinfo, _classify_memoryview, _classify_enum_member, _classify_named_tuple])
