"""Standard-library values held in live locals survive snapshot → restore (runtime/stdlib_kinds.py).

Differential: every program runs natively, uninterrupted, and compiled with a snapshot at its
first suspension; the restored generator (once restored next to the live original, once after
``detach`` of the original) must yield the same values with the same exact types.
"""
from __future__ import annotations

import collections
import datetime
import enum
import http
import json
import re
import sys
import uuid
from typing import Any

import pytest
from harness import load_compiled, load_native, run_python

import runtime
from runtime.values import objects
from runtime.errors import CorruptSnapshotError, UnserializableValueError

PRELUDE = """\
import collections, datetime, decimal, enum, fractions, pathlib, typing, uuid, zoneinfo
from collections import ChainMap, Counter, OrderedDict, defaultdict, deque
from datetime import date, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
"""

GEN = """
def check(v):
    return None

def gen():
    value = make()
    yield "made"
    yield value
    yield check(value)
    yield value
"""


def canon(x: Any) -> tuple[str, str]:
    """Exact type and value: ``(type qualname, repr)`` (repr shows nested types and cycles).

    A memoryview is documented to come back as the bytes it showed, so natively it counts as those.
    """
    if type(x) is list:
        x = [bytes(v) if type(v) is memoryview else v for v in x]
    return type(x).__qualname__, re.sub(r" at 0x[0-9a-f]+", "", repr(x))


def program(setup: str) -> str:
    return PRELUDE + setup.strip("\n") + "\n" + GEN if "def check" not in setup else \
        PRELUDE + setup.strip("\n") + "\n" + GEN.replace("def check(v):\n    return None\n", "")


def run_differential(setup: str) -> list[tuple[str, str]]:
    """Native outputs == outputs of the compiled generator restored at its first suspension."""
    return differential_source(program(setup))


def differential_source(source: str) -> list[tuple[str, str]]:
    """``run_differential`` for a whole module source whose ``gen()`` is the program."""
    native = load_native(source)
    compiled = load_compiled(source)
    expected = [canon(v) for v in native.gen()]

    original = compiled.gen()
    head = [canon(next(original))]
    data = runtime.snapshot(original)
    beside_original = runtime.restore(data)
    runtime.detach(original)
    after_detach = runtime.restore(data)
    for restored in (beside_original, after_detach):
        assert head + [canon(v) for v in restored] == expected
    return expected


# -- every kind, one value (or a few) at a time -----------------------------------------------

CASES: dict[str, str] = {
    "datetime-naive": "def make(): return datetime.datetime(2024, 2, 29, 13, 5, 7, 123456)",
    "datetime-utc": """
def make(): return datetime.datetime(2024, 1, 1, 0, 0, tzinfo=timezone.utc)
def check(v): return v.tzinfo is timezone.utc
""",
    "datetime-named-offset": """
def make(): return datetime.datetime(2024, 1, 1, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30), "IST"))
def check(v): return v.tzname(), v.utcoffset()
""",
    "datetime-zoneinfo-fold": """
def make():
    tz = zoneinfo.ZoneInfo("America/New_York")
    return [datetime.datetime(2021, 11, 7, 1, 30, tzinfo=tz, fold=f) for f in (0, 1)]
def check(v): return [(d.fold, d.utcoffset(), d.tzinfo is zoneinfo.ZoneInfo("America/New_York")) for d in v]
""",
    "date-time-timedelta": """
def make():
    return [date(1, 1, 1), date(9999, 12, 31), time(23, 59, 59, 999999), time(1, 2, tzinfo=timezone.utc, fold=1),
            time(4, 5, 6, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")), timedelta(days=-3, seconds=5, microseconds=7),
            timedelta.max, timedelta.min]
def check(v): return [x.fold for x in v if type(x) is time]
""",
    "timezones": """
def make():
    return [timezone.utc, timezone(timedelta(0)), timezone(timedelta(0), "UTC"), timezone(timedelta(hours=-8)),
            timezone(timedelta(hours=-8), "PST"), timezone(timedelta(hours=23, minutes=59)), timezone.max, timezone.min]
def check(v): return [v[0] is timezone.utc, v[1] is timezone.utc, v[2] is timezone.utc, [t.tzname(None) for t in v]]
""",
    "zoneinfo": """
def make(): return [zoneinfo.ZoneInfo("Europe/Paris"), zoneinfo.ZoneInfo("UTC")]
def check(v): return v[0] is zoneinfo.ZoneInfo("Europe/Paris"), str(v[1])
""",
    "decimal": """
def make():
    texts = ["NaN", "-NaN", "NaN123", "sNaN", "-sNaN45", "Infinity", "-Infinity", "-0", "0E-7", "-0E+3",
             "1.2300", "1E+5", "3.14159265358979323846264338327950288419716939937510", "-12345678901234567890E-40"]
    return [Decimal(t) for t in texts]
def check(v): return [(d.is_signed(), d.is_snan(), d.as_tuple()) for d in v]
""",
    "fraction-uuid-complex": """
def make():
    return [Fraction(-3, 4), Fraction(10**30, 7), Fraction(0), uuid.UUID("12345678-1234-5678-1234-567812345678"),
            uuid.UUID(int=0), complex(1.5, -0.0), complex(-0.0, 0.0), complex(float("inf"), float("nan")), 2j]
def check(v): return [str(c.real) + "/" + str(c.imag) for c in v if type(c) is complex]
""",
    "paths": """
def make():
    return [pathlib.PurePosixPath("/a/b/../c"), pathlib.PurePosixPath("//net/x"), pathlib.PureWindowsPath("C:/x\\\\y"),
            pathlib.PureWindowsPath("//server/share/f.txt"), pathlib.Path("rel/file.txt"), pathlib.PosixPath("/tmp")]
def check(v): return [p.parts for p in v]
""",
    "bytes-like": """
def make():
    shared = bytearray(b"abc\\x00")
    view = memoryview(b"xyz")
    return [shared, shared, view[1:], bytearray()]
def check(v):
    v[0].append(33)
    return v[0] is v[1], v[1], bytes(v[2])
""",
    "range-slice-ellipsis": """
def make():
    return [range(10), range(-5, 50, 7), range(10**30, -10**30, -3), range(0), slice(None),
            slice(1, [2, 3], "x"), slice(None, None, -1), ..., [...]]
def check(v): return [v[2][-1], v[5].stop, v[7] is ..., "abcdef"[v[6]]]
""",
    "deque": """
def make(): return [deque([1, 2, 3], maxlen=3), deque(), deque(maxlen=0), deque("ab")]
def check(v):
    v[0].append(4)
    return v[0], v[0].maxlen, v[2].maxlen, v[1].maxlen
""",
    "ordereddict": """
def make():
    d = OrderedDict.fromkeys("abcde", 0)
    d.move_to_end("b")
    d.move_to_end("d", last=False)
    return d
def check(v):
    v.move_to_end("a")
    return list(v), v.popitem(last=False)
""",
    "defaultdict-factories": """
def factory():
    return "fresh"

def make():
    return [defaultdict(list, a=[1]), defaultdict(int), defaultdict(None, k=1), defaultdict(factory),
            defaultdict(set), defaultdict(dict)]
def check(v):
    v[0]["b"].append(2)
    v[1]["n"] += 1
    return v[0], v[1], v[3]["x"], v[2].default_factory, v[3].default_factory is factory, v[5]["z"]
""",
    "counter": """
def make():
    c = Counter("abracadabra")
    c["zero"] = 0
    c["neg"] = -2
    return c
def check(v):
    v.update("aa")
    return v.most_common(2), v["missing"], +v
""",
    "chainmap": """
def make():
    base = {"a": 1}
    child = ChainMap(base).new_child({"b": 2})
    return [base, child, child.parents]
def check(v):
    v[0]["c"] = 3
    return v[1]["c"], v[1].maps[1] is v[0], v[2].maps[0] is v[0]
""",
    "enums": """
class Color(enum.Enum):
    RED = 1
    GREEN = (2, "g")
    CRIMSON = 1

class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2

class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1

class Bits(enum.IntFlag):
    A = 1
    B = 2
    C = 8

def make():
    return [Color.RED, Color.GREEN, Color.CRIMSON, Level.HIGH, Perm.R | Perm.X, Perm(0), Perm.W,
            Bits.A | Bits.C, Bits(0), ~Bits.A]
def check(v):
    return [v[0] is Color.RED, v[2] is Color.RED, v[3] is Level.HIGH, v[3] + 1, v[4] == Perm.R | Perm.X,
            Perm.X in v[4], v[7] == 9, type(v[7]) is Bits, int(v[9])]
""",
    "regular expressions": """
import re
WORDS = re.compile(r"[a-z]+", re.IGNORECASE)

def make():
    local = re.compile(rb"(?P<n>[0-9]+)", re.MULTILINE)
    return [local, local.search, re.compile("x.y", re.DOTALL | re.VERBOSE), re.Pattern.sub, WORDS.findall]
def check(v):
    return [v[0].pattern, v[0].flags, v[1](b"ab 12").group("n"), v[2].match("x\\ny") is not None,
            v[3](re.compile("b"), "-", "abc"), v[4]("Ab cd"), v[1].__self__ is v[0]]
""",
    "namedtuples": """
Point = collections.namedtuple("Point", "x y", defaults=[0])

class Row(typing.NamedTuple):
    name: str
    score: float = 0.5

def make():
    return [Point(1, [2]), Point(3), Row("a"), Row("b", 2.0), Point(Row("n"), Point(0, 0))]
def check(v): return [p._asdict() for p in v], type(v[4].x) is Row, v[1]._replace(x=9)
""",
}

if sys.version_info >= (3, 11):
    CASES["strenum"] = """
class Mode(enum.StrEnum):
    READ = "r"
    WRITE = enum.auto()

def make(): return [Mode.READ, Mode.WRITE]
def check(v): return [v[0] is Mode.READ, v[1] + "!", v[1] is Mode.WRITE]
"""


@pytest.mark.parametrize("name", sorted(CASES))
def test_kind_round_trip(name: str) -> None:
    run_differential(CASES[name])


def test_strenum_case_present_exactly_on_311_and_later() -> None:
    assert ("strenum" in CASES) == (sys.version_info >= (3, 11))


# -- exact types ------------------------------------------------------------------------------

def test_exact_types_are_kept() -> None:
    outputs = run_differential("""
def make(): return [pathlib.PosixPath("/x"), pathlib.PurePosixPath("/x"), zoneinfo.ZoneInfo("UTC"), Counter()]
def check(v): return [type(p).__name__ for p in v]
""")
    assert outputs[2] == ("list", "['PosixPath', 'PurePosixPath', 'ZoneInfo', 'Counter']")


def test_int_enum_member_stays_the_member() -> None:
    source = program("""
class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2

def make(): return Level.HIGH
""")
    compiled = load_compiled(source)
    g = compiled.gen()
    next(g)
    restored = runtime.restore(runtime.snapshot(g))
    runtime.detach(g)
    assert next(restored) is compiled.Level.HIGH


# -- nesting, sharing, cycles -----------------------------------------------------------------

def test_nested_values() -> None:
    run_differential("""
def make():
    q = deque([datetime.datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")), date(2020, 2, 2)])
    return {"queue": q, "amounts": OrderedDict(a=Decimal("1.10"), b=Fraction(1, 3)),
            "paths": (pathlib.PurePosixPath("/etc"), range(3)), "same": q}
def check(v): return v["queue"] is v["same"]
""")


def test_defaultdict_lists_shared_with_another_local() -> None:
    setup = """
def make():
    groups = defaultdict(list)
    groups["a"].append(1)
    groups["b"].append(2)
    return groups
"""
    source = PRELUDE + setup + """
def gen():
    groups = make()
    alias = groups["a"]
    yield "made"
    alias.append(99)
    groups["c"].append(3)
    yield groups
    yield groups["a"] is alias
"""
    expected = differential_source(source)
    assert expected[-1] == ("bool", "True")


def test_cycles() -> None:
    run_differential("""
def make():
    d = deque([1])
    d.append(d)
    od = OrderedDict(x=1)
    od["self"] = od
    dd = defaultdict(list)
    dd["me"] = dd
    c = ChainMap({})
    c["me"] = c
    cnt = Counter()
    cnt["k"] = [cnt]
    return [d, od, dd, c, cnt]
def check(v):
    return [v[0][1] is v[0], v[1]["self"] is v[1], v[2]["me"] is v[2], v[3]["me"] is v[3], v[4]["k"][0] is v[4]]
""")


def test_attributes_of_dict_subclass_instances_travel() -> None:
    run_differential("""
def make():
    od = OrderedDict(a=1)
    od.note = "kept"
    c = Counter("aab")
    c.tag = [od]
    return [od, c]
def check(v): return v[0].note, v[1].tag[0] is v[0]
""")


def test_restore_in_a_fresh_process() -> None:
    source = program("""
class Level(enum.IntEnum):
    LOW = 1

Pair = collections.namedtuple("Pair", "a b")

def make():
    return [Level.LOW, Pair(deque([1]), defaultdict(list, k=[date(2000, 1, 1)])),
            datetime.datetime(2021, 11, 7, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
            Decimal("-0"), pathlib.PosixPath("/p"), Counter("aa"), ChainMap({1: 2})]
""")
    compiled = load_compiled(source)
    g = compiled.gen()
    next(g)
    data = runtime.snapshot(g)
    runtime.detach(g)
    expected = [repr((type(v).__qualname__, repr(v))) for v in load_native(source).gen()][1:]
    proc = run_python(f"""
        import json, runtime
        runtime.allow_modules({compiled.__name__!r})  # restore imports only allowed modules
        gen = runtime.restore(bytes.fromhex({data.hex()!r}))
        print(json.dumps([repr((type(v).__qualname__, repr(v))) for v in gen]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == expected


# -- what is not carried ----------------------------------------------------------------------

def _snapshot_error(setup: str) -> UnserializableValueError:
    compiled = load_compiled(program(setup))
    g = compiled.gen()
    next(g)
    with pytest.raises(UnserializableValueError) as info:
        runtime.snapshot(g)
    return info.value


FOREIGN = """
import collections, enum

class Shade(enum.Enum):
    DARK = 1

Pair = collections.namedtuple("Pair", "a b")

def factory():
    return 0
"""


def test_enum_of_a_class_restore_does_not_allow() -> None:
    foreign = load_native(FOREIGN)
    error = _snapshot_error(f"import {foreign.__name__} as foreign\ndef make(): return [1, foreign.Shade.DARK]")
    assert error.path == ["local 'value'", "[1]"]
    assert error.type_name.endswith("Shade")


def test_named_tuple_of_a_class_restore_does_not_allow() -> None:
    foreign = load_native(FOREIGN)
    error = _snapshot_error(f"import {foreign.__name__} as foreign\ndef make(): return foreign.Pair(1, 2)")
    assert error.type_name.endswith("Pair")


def test_defaultdict_with_a_factory_that_cannot_travel() -> None:
    foreign = load_native(FOREIGN)
    error = _snapshot_error(f"import {foreign.__name__} as foreign\ndef make(): return defaultdict(foreign.factory)")
    assert error.path == ["local 'value'", ".default_factory"]



def test_defaultdict_with_a_lambda_factory_made_by_a_function_of_the_module_travels() -> None:
    """(It could not travel before issue 11: the lambda is carried by its place in make's code.)"""
    run_differential("def make(): return {'d': defaultdict(lambda: 0)}")


def test_unsupported_items_are_named_in_the_path() -> None:
    error = _snapshot_error("def make(): return deque([1, open])")
    assert error.path == ["local 'value'", "[1]"]
    error = _snapshot_error("def make(): return ChainMap({'k': open})")
    assert error.path == ["local 'value'", ".maps", "[0]", "['k']"]
    error = _snapshot_error("def make(): return slice(0, open)")
    assert error.path == ["local 'value'", ".stop"]


def test_other_values_stay_unserializable() -> None:
    for expr in ("NotImplemented", "zoneinfo.ZoneInfo.no_cache('UTC').__class__.from_file(open('/usr/share/zoneinfo/UTC', 'rb'))",
                 "iter(deque())", "re.compile('x').scanner('x')"):
        error = _snapshot_error(f"import re\ndef make(): return {expr}")
        assert error.path == ["local 'value'"]


def test_released_memoryview_is_unserializable() -> None:
    _snapshot_error("""
def make():
    view = memoryview(b"x")
    view.release()
    return view
""")


# -- corrupt heads and bodies -----------------------------------------------------------------

BAD_HEADS: list[tuple[str, Any]] = [
    ("datetime", None), ("datetime", [2020, 1, 1]), ("datetime", [2020, 13, 1, 0, 0, 0, 0, None, 0]),
    ("datetime", [2020, 1, 1, 0, 0, 0, 0, "UTC", 0]), ("datetime", [2020, 1, 1, 0, 0, 0, 0, None, 2]),
    ("datetime", [2020, 1, 1, 0, 0, 0, 0, None, True]), ("datetime", ["2020", 1, 1, 0, 0, 0, 0, None, 0]),
    ("date", [0, 1, 1]), ("date", (2020, 1, 1)), ("time", [25, 0, 0, 0, None, 0]), ("time", [1, 0, 0, 0, 5, 0]),
    ("timedelta", [10**12, 0, 0]), ("timedelta", [1.5, 0, 0]),
    ("timezone", [datetime.timedelta(days=1), None]), ("timezone", [0, None]), ("timezone", [datetime.timedelta(0), 3]),
    ("zoneinfo", "../../../../etc/passwd"), ("zoneinfo", "/etc/localtime"), ("zoneinfo", "No/Such_Zone"),
    ("zoneinfo", ""), ("zoneinfo", 5), ("zoneinfo", "a\0b"), ("zoneinfo", "x" * 1000),
    ("decimal", 1), ("decimal", "abc"), ("decimal", "1e2"), ("decimal", " 1"),
    ("fraction", [1, 0]), ("fraction", [1, -2]), ("fraction", [1.5, 2]), ("fraction", [1]),
    ("uuid", [b"short", None]), ("uuid", [b"x" * 16, 7]), ("uuid", [b"x" * 16, [1]]), ("uuid", "u"),
    ("complex", [1, 2]), ("complex", [1.0]), ("path.posix", b"/x"), ("purepath.windows", None),
    ("path.windows", "C:/x") if sys.platform != "win32" else ("path.posix", "/x"),
    ("bytearray", "abc"), ("memoryview", [b"x"]), ("range", [0, 10, 0]), ("range", [0, 1.0, 1]), ("range", [1, 2]),
    ("slice", [1, 2]), ("slice", None), ("ellipsis", 1),
    ("re-pattern", ["(", 0]), ("re-pattern", ["x", re.DEBUG]), ("re-pattern", ["x", 1.0]), ("re-pattern", [1, 0]),
    ("re-pattern", ["x", re.LOCALE]), ("re-pattern", ["x" * (1 << 17), 0]), ("re-pattern", "x"),
    ("deque", -1), ("deque", "3"), ("ordereddict", [1]), ("ordereddict", {1: 2}), ("counter", "x"),
    ("defaultdict", 5), ("defaultdict", "list"), ("chainmap", [1]),
    ("enum", [enum.Enum, 1]), ("enum", [http.HTTPStatus, 200]), ("enum", [collections.OrderedDict, 1]), ("enum", "x"),
    ("enum", [1, 1]), ("namedtuple", [uuid.UUID, ()]), ("namedtuple", [tuple, ()]), ("namedtuple", None),
    ("namedtuple", [type(sys.version_info), (1,)]),
]


@pytest.mark.parametrize("name, head", BAD_HEADS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD_HEADS)])
def test_corrupt_head(name: str, head: Any) -> None:
    with pytest.raises(CorruptSnapshotError):
        objects.create(name, head)


def test_corrupt_values_of_allowed_classes() -> None:
    compiled = load_compiled(program("""
class Color(enum.Enum):
    RED = 1

Point = collections.namedtuple("Point", "x y")

def make(): return None
"""))
    for name, head in [("enum", [compiled.Color, 2]), ("enum", [compiled.Color]), ("namedtuple", [compiled.Point, (1,)]),
                       ("namedtuple", [compiled.Point, [1, 2]]), ("namedtuple", [compiled.Color, (1, 2)])]:
        with pytest.raises(CorruptSnapshotError):
            objects.create(name, head)
    assert objects.create("enum", [compiled.Color, 1]) is compiled.Color.RED
    assert objects.create("namedtuple", [compiled.Point, (1, 2)]) == compiled.Point(1, 2)


BAD_BODIES: list[tuple[str, Any, Any]] = [
    ("deque", None, {1: 2}), ("deque", 1, [1, 2]), ("ordereddict", None, [1, 2]), ("counter", None, None),
    ("defaultdict", None, [("a", 1)]), ("chainmap", None, {"maps": (1,)}), ("chainmap", None, {1: []}),
    ("chainmap", None, []),
]


@pytest.mark.parametrize("name, head, body", BAD_BODIES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD_BODIES)])
def test_corrupt_body(name: str, head: Any, body: Any) -> None:
    obj = objects.create(name, head)
    with pytest.raises(CorruptSnapshotError):
        objects.fill(name, obj, head, body)


def test_one_phase_kinds_take_no_body() -> None:
    with pytest.raises(CorruptSnapshotError):
        objects.fill("datetime", None, None, [])
