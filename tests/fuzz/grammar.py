"""Structured fuzz inputs for ``runtime.restore`` and ``runtime.inspect_snapshot``, from the wire grammar.

Inputs are built from the grammar of snapshot values (``runtime/values/wire.py``: the node tags;
``envelope.py``: the frame record; the kind modules: every registered kind name and its head) and
placed into the frames of REAL snapshots of the small compiled generators of ``tests.fuzz.target``,
so that the envelope and frame record pass their checks and the values really get decoded. Besides
random value trees there are byte-level and msgpack-level mutations of real snapshots, mutations of
the frame records, and the adversarial families found by the attack review (shared tuple DAGs in sets,
deep chains through refs, eager itertools over ``map(print, ...)``, huge Fractions and Decimals, many
empty containers, int keys that all hash alike, ints too long to render, enum/namedtuple/instance
nodes naming the target's classes).

Everything is deterministic from a seed: ``generate(seed)`` returns ``(family, data)``. Most inputs
are under 4 KB; a small share (``large``) is up to about 1-2 MB to measure the cost per byte.
The named builders (``dag_in_set``, ``deep_chain``, ...) make one explicit input of a family each,
for regression tests.
"""
from __future__ import annotations

import importlib
import math
import random
import sys
from typing import Any, Callable

import msgpack

TARGET = "tests.fuzz.target"
T = TARGET + ":"

# wire tags (runtime/values/wire.py)
REF, LIST, TUPLE, DICT, SET, FROZENSET, BIGINT, USTR, AGAIN, CUSTOM = range(10)
EXC, EXC_CLS, GROUP, GROUP_CLS = 10, 11, 12, 13
RANGE_IT, LIST_IT, LIST_REVIT, TUPLE_IT, STR_IT, BYTES_IT, ENUMERATE, ZIP, REVERSED, OBJECT, SHAPED = range(14, 25)

BOUNDARY_INTS = [0, 1, -1, 2, 3, 7, 255, 256, 65535, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), 2 ** 32, 2 ** 62, 2 ** 63 - 1,
                 2 ** 63, -(2 ** 63), 2 ** 64 - 1]
SAFE_BUILTINS = ["abs", "all", "any", "ascii", "bin", "callable", "chr", "divmod", "format", "hash", "hex", "id",
                 "isinstance", "issubclass", "iter", "len", "max", "min", "next", "oct", "ord", "pow", "print", "repr",
                 "round", "sorted", "sum", "bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset", "int",
                 "list", "object", "range", "set", "slice", "str", "tuple", "enumerate", "filter", "map", "reversed",
                 "zip"]
UNSAFE_BUILTINS = ["eval", "exec", "open", "__import__", "getattr", "setattr", "compile", "input", "breakpoint",
                   "globals", "vars", "delattr", "memoryview", "type", "super", "classmethod", "property", "nope", ""]
CALLABLE_BUILTINS = ["print", "print", "len", "str", "repr", "hash", "sorted", "iter", "next", "list", "tuple", "abs"]
TARGET_CLASSES = ["Plain", "Slotted", "SlotBase", "Shadow", "Frozen", "Point", "Stateful", "Hashy", "Iterable",
                  "WithMeta", "MetaTuple", "Described", "Color", "Level", "Perm", "Shade", "Pair", "Typed", "AppError",
                  "Noisy", "NoisyOS", "Manager", "Meta", "Descriptor"]
TARGET_FUNCS = ["evil", "evil_key", "simple", "inner", "outer", "_record", "__getattr__"]
TARGET_OTHER = ["Described.attr", "Plain.method", "missing_name", "Color.RED", "Color.RED.value", "CALLS",
                "Plain.__init__", "Meta.__getattr__", "WithMeta.anything", "Stateful.__setstate__", "STARTS",
                "Manager.__exit__", "__builtins__", "collections", "enum"]
FOREIGN_REFS = ["os:system", "builtins:eval", "builtins:print", "subprocess:Popen", "runtime.values.allow:resolve",
                "runtime:restore", "tests.fuzz:target", TARGET, ":", "x:y", "", T, T + "<locals>.f", "os.path:join",
                "posix:system", "sys:exit", "importlib:import_module", "tests.fuzz.run:main"]
EXC_NAMES = ["ValueError", "KeyError", "OSError", "FileNotFoundError", "BlockingIOError", "StopIteration",
             "SystemExit", "KeyboardInterrupt", "GeneratorExit", "SyntaxError", "UnicodeDecodeError", "ImportError",
             "AttributeError", "NameError", "StopAsyncIteration", "ExceptionGroup", "BaseExceptionGroup",
             "RecursionError", "MemoryError", "Exception", "BaseException", "Warning", "eval", "len", "object", ""]
EXC_MEMBERS = ["errno", "strerror", "filename", "filename2", "winerror", "characters_written", "code", "value",
               "name", "path", "msg", "lineno", "offset", "text", "end_lineno", "end_offset", "print_file_and_line",
               "obj", "__suppress_context__", "__traceback__", "__notes__", "args", "__class__", "__dict__",
               "object", "start", "end", "reason", "encoding", "x"]
ATTR_NAMES = ["a", "b", "x", "y", "v", "state", "__dict__", "__class__", "__weakref__", "__slots__", "hook",
              "__notes__", "maps", "_fields", "", "é"]
ZONE_KEYS = ["UTC", "Europe/Paris", "America/New_York", "Etc/GMT+5", "../etc/passwd", "/etc/passwd",
             "Nope/Nowhere", "a" * 300, "", "UTC/../UTC", "posixrules"]
DECIMALS = ["1.5", "0", "-0", "NaN", "-NaN123", "sNaN", "sNaN42", "Infinity", "-Infinity", "1E+999999999",
            "1E-999999999", "1.50", "1e5", " 1", "abc", "1_000", "0E-1000000"]
PATHS = ["", "/", "/etc/passwd", "a/b/../c", "C:\\x", "\\\\server\\share", "\x00", "a" * 200]

REDUCE_KINDS = ["cycle", "islice", "chain", "compress", "dropwhile", "takewhile", "starmap", "accumulate", "groupby",
                "_grouper", "zip_longest", "product", "permutations", "combinations",
                "combinations_with_replacement", "tee", "_tee_dataobject", "pairwise", "batched"]
EAGER_ITERTOOLS = ["product", "permutations", "combinations", "combinations_with_replacement"]
KNOWN_KINDS = ["builtin", "ref", "method", "cmethod", "layout", "obj", "state", "cell", "fn", "gen", "gen-done",
               "datetime", "date", "time", "timedelta", "timezone", "zoneinfo", "decimal", "fraction", "uuid",
               "complex", "purepath.posix", "purepath.windows", "path.posix", "path.windows", "bytearray",
               "memoryview", "range", "slice", "ellipsis", "deque", "ordereddict", "counter", "defaultdict",
               "chainmap", "enum", "namedtuple", "map", "filter", "itertools.count", "itertools.repeat",
               *(f"itertools.{name}" for name in REDUCE_KINDS)]
BOGUS_KINDS = ["nope", "", "user:x:y", "obj ", "REF", "itertools", "itertools.nope", "builtins", "gen-done2"]

MERSENNE = 2 ** 61 - 1  # hash(k * MERSENNE) == 0 for every int k


def kind_names() -> list[str]:
    """Every kind name registered in this process (the standard kinds loaded), the known ones first."""
    from runtime.values import kinds
    kinds.load_standard()
    import runtime.snapshot  # noqa: F401  (registers "gen" and "gen-done")
    extra = sorted(name for name in kinds.BY_NAME if name not in KNOWN_KINDS)
    return KNOWN_KINDS + extra


# --------------------------------------------------------------------------- the target and its real snapshots

_target: Any = None
_templates: list[tuple[str, int, bytes]] | None = None


def target() -> Any:
    """The compiled ``tests.fuzz.target`` module (compiled by the import hook on first use)."""
    global _target
    if _target is None:
        module = sys.modules.get(TARGET)
        if module is None:
            from transpiler import install_import_hook
            hook = install_import_hook([TARGET])
            try:
                module = importlib.import_module(TARGET)
            finally:
                hook.uninstall()
        _target = module
    return _target


def templates() -> list[tuple[str, int, bytes]]:
    """``(start, step, snapshot bytes)`` of every target generator at its first few suspension points."""
    global _templates
    if _templates is None:
        import runtime
        module = target()
        found: list[tuple[str, int, bytes]] = []
        for start in module.STARTS:
            gen = eval(start, vars(module))  # noqa: S307 - our own fixed expressions
            for step in range(3):
                found.append((start, step, runtime.snapshot(gen)))
                try:
                    gen.send(None if step == 0 else step)
                except StopIteration:
                    break
            runtime.detach(gen)
        module.CALLS.clear()
        _templates = found
    return _templates


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def pack(tree: Any) -> bytes:
    return msgpack.packb(tree, use_bin_type=True)


def template(start: str = "simple(evil)", step: int = 1) -> list[Any]:
    """One real snapshot, unpacked (a fresh copy)."""
    for s, n, data in templates():
        if s == start and n == step:
            return unpack(data)
    raise KeyError((start, step))


def frame_records() -> list[list[Any]]:
    """Every frame record of the real snapshots (for held generators and nested functions)."""
    return [record for _, _, data in templates() for record in unpack(data)[2:]]


def with_value(node: Any, start: str = "simple(evil)", step: int = 1) -> bytes:
    """A real snapshot of ``simple`` suspended at its first yield, whose one live local ``x`` is ``node``."""
    tree = template(start, step)
    tree[2][5] = [node]
    return pack(tree)


def count_slots(p: Any) -> int:
    """How many memo slots decoding the packed value ``p`` takes (what the decoder does, roughly)."""
    t = type(p)
    if t is dict:
        return 1
    if t is not list or not p:
        return 0
    tag = p[0]
    if type(tag) is not int:
        return sum(count_slots(x) for x in p)
    if tag in (REF, BIGINT, USTR):
        return 0
    if tag == AGAIN:
        return sum(count_slots(x) for x in p[2:])
    if tag in (EXC, EXC_CLS, GROUP, GROUP_CLS, CUSTOM):
        return 1 + sum(count_slots(x) for x in p[2:])
    return 1 + sum(count_slots(x) for x in p[1:])


# --------------------------------------------------------------------------- random value trees

_SCALARS: list[Any] = [None, True, False, *BOUNDARY_INTS, 0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, "", "a",
                       "x", "é", "\u2603", "ref", "obj", "state", "len", "print", "ValueError", T + "evil",
                       T + "Plain", "a,b", b"", b"\x00", b"DG", b"\xff" * 16]

_NO_BODY = object()


class Builder:
    """Builds packed value nodes in decoding order, tracking which memo slot each container takes,
    so that refs point at slots that exist (or, sometimes, on purpose, at slots that do not)."""

    def __init__(self, rng: random.Random, slots: list[str] | None = None, budget: int = 40) -> None:
        self.rng = rng
        # slot 0 is the frame's own generator (snapshot format 2): its values start at slot 1
        self.slots: list[str] = slots if slots is not None else ["frame generator"]
        self.budget = budget
        self.kinds = kind_names()

    # -- small pieces ---------------------------------------------------------------------------

    def take(self, label: str) -> int:
        self.slots.append(label)
        return len(self.slots) - 1

    def scalar(self) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.55:
            return rng.choice(_SCALARS)
        if r < 0.7:
            return rng.randint(-1000, 1000)
        if r < 0.78:
            return rng.randint(-(2 ** 63), 2 ** 64 - 1)
        if r < 0.88:
            return "".join(rng.choice("abcxyz_,:.é\u2603 ") for _ in range(rng.randint(0, 8)))
        if r < 0.95:
            return rng.randbytes(rng.randint(0, 8))
        if r < 0.98:
            return rng.uniform(-1e6, 1e6)
        return msgpack.ExtType(rng.randint(0, 127), rng.randbytes(rng.randint(0, 4)))

    def small_int(self) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            return rng.randint(-2, 10)
        if r < 0.85:
            return rng.choice(BOUNDARY_INTS)
        if r < 0.95:
            return self.bigint(rng.randint(9, 24))
        return self.scalar()

    def bigint(self, nbytes: int, value: int | None = None) -> list[Any]:
        if value is None:
            value = int.from_bytes(self.rng.randbytes(nbytes), "little", signed=True)
        return [BIGINT, value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)]

    def ustr(self) -> list[Any]:
        text = self.rng.choice(["\ud800", "a\udfff", "\udc80x\ud83d", "ok"])
        return [USTR, text.encode("utf-8", "surrogatepass") if self.rng.random() < 0.9 else self.rng.randbytes(3)]

    def ref(self, label: str | None = None) -> list[Any]:
        rng = self.rng
        n = len(self.slots)
        r = rng.random()
        if r < 0.04:
            return [REF, rng.choice([n, n + 1, -1, 2 ** 32, "0", None, 1.0])]
        if r < 0.06:
            return [REF] if rng.random() < 0.5 else [REF, 0, 0]
        if label is not None:
            matching = [i for i, lab in enumerate(self.slots) if lab == label or lab.startswith(label)]
            if matching:
                return [REF, rng.choice(matching)]
        if not n:
            return [REF, 0]
        if rng.random() < 0.5:
            return [REF, rng.randrange(max(0, n - 4), n)]
        return [REF, rng.randrange(n)]

    def lst(self, *thunks: Callable[[], Any]) -> list[Any]:
        self.take("list")
        return [LIST, *[t() for t in thunks]]

    def tup(self, *thunks: Callable[[], Any]) -> list[Any]:
        items = [t() for t in thunks]
        self.take("tuple")
        return [TUPLE, *items]

    def values(self, depth: int, n: int | None = None) -> list[Any]:
        if n is None:
            n = self.rng.choice([0, 1, 1, 2, 2, 3, 4, 6])
        return [self.value(depth) for _ in range(n)]

    def hashable(self, depth: int) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.6 or depth <= 0:
            s = self.scalar()
            return s if not isinstance(s, float) or rng.random() < 0.3 else rng.randint(0, 99)
        if r < 0.75:
            items = self.values(depth - 1, rng.randint(0, 3))
            self.take("tuple")
            return [TUPLE, *items]
        if r < 0.85:
            return self.ref()
        if r < 0.9:
            return self.bigint(rng.randint(9, 16))
        return self.value(depth - 1)

    # -- the value grammar ---------------------------------------------------------------------

    def value(self, depth: int) -> Any:
        self.budget -= 1
        if depth <= 0 or self.budget <= 0:
            return self.scalar() if self.rng.random() < 0.85 or not self.slots else self.ref()
        rng = self.rng
        pick = rng.choices(_PRODUCTIONS, cum_weights=_CUM_WEIGHTS)[0]
        return pick(self, depth - 1)

    def p_scalar(self, depth: int) -> Any:
        return self.scalar()

    def p_list(self, depth: int) -> Any:
        self.take("list")
        return [LIST, *self.values(depth)]

    def p_tuple(self, depth: int) -> Any:
        items = self.values(depth)
        self.take("tuple")
        return [TUPLE, *items]

    def p_dict(self, depth: int) -> Any:
        rng = self.rng
        slot = self.take("dict")
        n = rng.choice([0, 1, 2, 3, 4])
        if rng.random() < 0.5:  # str keys: a model for shaped dicts
            keys: list[Any] = rng.sample(["a", "b", "c", "d", "x", "y"], n)
            if n >= 2:
                self.slots[slot] = f"dictS{n}"
        else:
            keys = [self.hashable(depth) for _ in range(n)]
        values = self.values(depth, n)
        if rng.random() < 0.05:
            values = values[:-1] if values else [1]
        return [DICT, *keys, *values]

    def p_map(self, depth: int) -> Any:
        self.take("map")
        rng = self.rng
        out = {}
        for _ in range(rng.randint(0, 4)):
            key = self.scalar()
            if isinstance(key, (msgpack.ExtType, float)) and rng.random() < 0.7:
                key = rng.randint(0, 9)
            try:
                out[key] = self.scalar() if rng.random() < 0.95 else [1]
            except TypeError:
                pass
        return out

    def p_set(self, depth: int) -> Any:
        self.take("set")
        return [SET, *[self.hashable(depth) for _ in range(self.rng.randint(0, 4))]]

    def p_frozenset(self, depth: int) -> Any:
        items = [self.hashable(depth) for _ in range(self.rng.randint(0, 4))]
        self.take("frozenset")
        return [FROZENSET, *items]

    def p_bigint(self, depth: int) -> Any:
        rng = self.rng
        if rng.random() < 0.05:
            return [BIGINT, rng.choice([None, "x", 5, b"", [1]])]
        if rng.random() < 0.03:
            return self.bigint(rng.randint(1786, 2200))  # over 4,300 decimal digits
        return self.bigint(rng.choice([0, 1, 8, 9, 9, 12, 16, 33]))

    def p_ustr(self, depth: int) -> Any:
        return self.ustr()

    def p_ref(self, depth: int) -> Any:
        return self.ref()

    def p_again(self, depth: int) -> Any:
        children = self.values(depth, self.rng.randint(0, 2))
        slot = self.ref()[1:] or [0]
        return [AGAIN, *slot, *children]

    def p_custom(self, depth: int) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.9:
            name = rng.choice(self.kinds)
        elif r < 0.97:
            name = rng.choice(BOGUS_KINDS)
        else:
            name = rng.choice([None, 5, b"ref", [1]])
        return self.custom(name, depth, plausible=rng.random() < 0.8)

    def custom(self, name: Any, depth: int, plausible: bool = True) -> list[Any]:
        rng = self.rng
        self.take(f"custom:{name}")
        maker = _HEADS.get(name) if plausible and type(name) is str else None
        if maker is None:
            head = self.value(depth)
            body = self.value(depth) if rng.random() < 0.4 else _NO_BODY
        else:
            head, body = maker(self, depth)
        node = [CUSTOM, name, head]
        if body is not _NO_BODY:
            node.append(body)
        if rng.random() < 0.02:
            node.append(None)  # too many fields
        return node

    def p_exception(self, depth: int) -> Any:
        rng = self.rng
        if rng.random() < 0.6:
            tag, name = EXC, rng.choice(EXC_NAMES)
        else:
            tag, name = EXC_CLS, T + rng.choice(["AppError", "Noisy", "NoisyOS", "Plain", "Hashy", "Color",
                                                 "WithMeta", "evil"]) if rng.random() < 0.85 \
                else rng.choice(FOREIGN_REFS)
        self.take("exc")
        return [tag, name, *self.exc_state(depth)]

    def exc_state(self, depth: int) -> list[Any]:
        rng = self.rng
        args = self.p_tuple(depth) if rng.random() < 0.9 else self.value(depth)
        ctx = None if rng.random() < 0.7 else (self.ref("exc") if rng.random() < 0.5 else self.value(depth))
        cause = None if rng.random() < 0.8 else (self.ref("exc") if rng.random() < 0.5 else self.value(depth))
        members: list[Any] = []
        for _ in range(rng.choice([0, 0, 0, 1, 2])):
            members += [rng.choice(EXC_MEMBERS), self.value(depth)]
        attrs: list[Any] = []
        for _ in range(rng.choice([0, 0, 0, 1])):
            attrs += [rng.choice(ATTR_NAMES), self.value(depth)]
        if rng.random() < 0.03:
            members.append("odd")
        return [args, ctx, cause, members, attrs]

    def p_group(self, depth: int) -> Any:
        rng = self.rng
        tag = GROUP if rng.random() < 0.7 else GROUP_CLS
        name = rng.choice(["ExceptionGroup", "BaseExceptionGroup", "ValueError"]) if tag == GROUP \
            else rng.choice([T + "AppError", T + "Noisy", "builtins:ExceptionGroup"])
        message = rng.choice(["msg", "", None, 5])
        excs = [TUPLE, *[self.p_exception(depth) for _ in range(rng.randint(0, 2))]]
        self.take("tuple")
        self.take("exc")
        return [tag, name, message, excs, *self.exc_state(depth)]

    def p_iterator(self, depth: int) -> Any:
        rng = self.rng
        tag = rng.choice([RANGE_IT, LIST_IT, LIST_REVIT, TUPLE_IT, STR_IT, BYTES_IT, ENUMERATE, ZIP, REVERSED])
        index = self.small_int
        if tag == RANGE_IT:
            node = [RANGE_IT, self.small_int(), self.small_int(), rng.choice([1, 1, -1, 2, 0, 3]) if rng.random() < 0.9
                    else self.small_int()]
        elif tag in (LIST_IT, LIST_REVIT):
            seq = self.ref("list") if rng.random() < 0.3 else self.p_list(depth)
            node = [tag, seq, index()]
        elif tag == TUPLE_IT:
            seq = self.ref("tuple") if rng.random() < 0.2 else self.p_tuple(depth)
            node = [tag, seq, index()]
        elif tag == STR_IT:
            node = [tag, rng.choice(["", "abc", "é\u2603x"]) if rng.random() < 0.9 else self.value(depth), index()]
        elif tag == BYTES_IT:
            node = [tag, rng.randbytes(rng.randint(0, 5)) if rng.random() < 0.9 else self.value(depth)]
        elif tag == ENUMERATE:
            node = [tag, self.iterable(depth), index()]
        elif tag == ZIP:
            node = [tag, rng.random() < 0.5 if rng.random() < 0.95 else 1,
                    *[self.iterable(depth) for _ in range(rng.randint(0, 3))]]
        else:
            node = [tag, rng.choice([[TUPLE, 1, 2], "abc", b"xyz"]) if rng.random() < 0.8 else self.value(depth),
                    index()]
            if type(node[1]) is list:
                self.take("tuple")
        if rng.random() < 0.03:
            node = node[:-1] if len(node) > 2 else node + [0]
        self.take("iter")
        return node

    def iterable(self, depth: int) -> Any:
        """Something restore may wrap in an iterator: a list, an iterator, a lazy map over print, ..."""
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            return self.p_list(depth)
        if r < 0.55:
            return self.p_iterator(depth)
        if r < 0.7:
            return self.custom("map", depth)
        if r < 0.78:
            return self.instance(rng.choice(["Iterable", "Hashy", "Plain"]), depth)
        if r < 0.85:
            return self.custom(rng.choice(["itertools.count", "itertools.repeat", "filter"]), depth)
        if r < 0.9:
            return self.ref("iter")
        return self.value(depth)

    def class_ref(self, name: str | None = None) -> list[Any]:
        rng = self.rng
        if name is None:
            r = rng.random()
            name = T + rng.choice(TARGET_CLASSES) if r < 0.85 else rng.choice(FOREIGN_REFS + [T + n for n in TARGET_OTHER])
        self.take("custom:ref")
        return [CUSTOM, "ref", name]

    def func(self, depth: int) -> Any:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            self.take("custom:builtin")
            return [CUSTOM, "builtin", rng.choice(CALLABLE_BUILTINS)]
        if r < 0.75:
            self.take("custom:ref")
            return [CUSTOM, "ref", T + rng.choice(["evil", "evil_key", "Plain", "Hashy", "Color", "Pair"])]
        if r < 0.85:
            return None
        return self.value(depth)

    def layout(self, cls: str | None, names: list[str], slot_names: list[str]) -> list[Any]:
        self.take("custom:layout")
        head = self.lst(lambda: self.class_ref(cls), lambda: [LIST, *names], lambda: [LIST, *slot_names])
        self.take("list")
        self.take("list")
        return [CUSTOM, "layout", head]

    def instance(self, cls: str, depth: int) -> Any:
        """[23, layout, *values] for a class of the target (plausible names for it)."""
        rng = self.rng
        self.take("obj")
        names = rng.choice([["a"], ["a", "b"], ["x", "y"], ["v"], []]) if cls not in ("Slotted", "Shadow", "SlotBase") \
            else []
        slot_names = rng.choice([["a"], ["a", "b"], []]) if cls in ("Slotted", "Shadow", "SlotBase") else []
        if rng.random() < 0.1:
            names, slot_names = slot_names, names
        layout = self.layout(T + cls, names, slot_names)
        n = len(names) + len(slot_names)
        if rng.random() < 0.05:
            n += rng.choice([-1, 1])
        return [OBJECT, layout, *self.values(depth, max(n, 0))]

    def p_object(self, depth: int) -> Any:
        rng = self.rng
        if rng.random() < 0.25 and any(lab == "custom:layout" for lab in self.slots):
            self.take("obj")
            layout = self.ref("custom:layout")
            return [OBJECT, layout, *self.values(depth, rng.randint(0, 2))]
        if rng.random() < 0.85:
            return self.instance(rng.choice(TARGET_CLASSES), depth)
        self.take("obj")
        return [OBJECT, self.value(depth), *self.values(depth)]

    def p_shaped(self, depth: int) -> Any:
        rng = self.rng
        models = [(i, int(lab[5:])) for i, lab in enumerate(self.slots) if lab.startswith("dictS")]
        if models and rng.random() < 0.9:
            model, n = rng.choice(models)
        else:
            model, n = (self.ref()[1:] or [0])[0], rng.randint(0, 3)
        self.take("dict")
        if rng.random() < 0.1:
            n += rng.choice([-1, 1])
        return [SHAPED, model, *self.values(depth, max(n, 0))]

    def p_adversarial(self, depth: int) -> Any:
        """A small member of one of the adversarial families, inside an ordinary tree."""
        rng = self.rng
        which = rng.randrange(7)
        if which == 0:
            return self.dag_in(rng.choice(["set", "frozenset", "dictkey", "enum", "tuple"]), rng.randint(2, 22))
        if which == 1:
            return self.chain(rng.choice(list(CHAINS)), rng.randint(2, 300), rng.choice(list(CHAIN_USES)))
        if which == 2:
            return self.eager_itertools(rng.choice(EAGER_ITERTOOLS), depth)
        if which == 3:
            return self.same_hash(rng.choice(["dict", "set", "frozenset"]), rng.randint(2, 40))
        if which == 4:
            return self.custom("fraction", depth)
        if which == 5:
            return self.bigint(rng.randint(1786, 2000))
        return self.module_class_value(depth)

    # -- adversarial subtrees ------------------------------------------------------------------

    def dag(self, k: int) -> list[Any]:
        """T(0) = (1, 2); T(i) = (T(i-1), T(i-1)): k+1 tuples, 2**k leaves when walked."""
        node = [TUPLE, 1, 2]
        slot = self.take("tuple")
        for _ in range(k):
            node = [TUPLE, node, [REF, slot]]
            slot = self.take("tuple")
        return node

    def dag_in(self, where: str, k: int) -> list[Any]:
        if where == "set":
            self.take("set")
            return [SET, self.dag(k)]
        if where == "frozenset":
            node = [FROZENSET, self.dag(k)]
            self.take("frozenset")
            return node
        if where == "dictkey":
            self.take("dict")
            return [DICT, self.dag(k), None]
        if where == "enum":
            self.take("custom:enum")
            head = self.lst(lambda: self.class_ref(T + "Color"), lambda: self.dag(k))
            return [CUSTOM, "enum", head]
        if where == "counter":
            self.take("custom:counter")
            self.take("dict")
            return [CUSTOM, "counter", None, [DICT, self.dag(k), 1]]
        if where == "sorted-set":  # the inspector sorts set items to render them: equal DAGs compared
            self.take("set")
            a = self.dag(k)
            b = self.dag(k)
            return [SET, a, b, [TUPLE, 0]]
        node = [TUPLE, self.dag(k)]  # "tuple": only carried, never hashed
        self.take("tuple")
        return node

    def chain(self, kind: str, n: int, use: str) -> list[Any]:
        """``n`` objects each holding the previous one (through a ref: the decoder itself never nests),
        all listed in a holder list, then ``use`` applied to the last one."""
        holder = self.take("list")
        start, element = CHAINS[kind]
        items = [start(self)]
        prev = len(self.slots) - 1
        for _ in range(n):
            node, prev = element(self, prev)
            items.append(node)
        wrapped = CHAIN_USES[use](self, prev)
        node = [TUPLE, [LIST, *items], wrapped]
        self.take("tuple")
        del holder
        return node

    def eager_itertools(self, name: str, depth: int, func: Any = None, source: Any = None) -> list[Any]:
        """itertools.<name>(map(func, source)): product & co. read their argument to its end when made."""
        rng = self.rng
        self.take(f"custom:itertools.{name}")
        head_slot = self.take("list")
        args = [self.custom_map(func, source)]
        if name != "product":
            args.append(rng.choice([1, 2]))
        self.take("tuple")
        del head_slot
        return [CUSTOM, f"itertools.{name}", [LIST, [TUPLE, *args]]]

    def custom_map(self, func: Any = None, source: Any = None) -> list[Any]:
        rng = self.rng
        self.take("custom:map")
        self.take("list")
        if func is None:
            func = rng.choice([("builtin", "print"), ("ref", T + "evil"), ("ref", T + "Plain"), ("builtin", "len")])
        self.take(f"custom:{func[0]}")
        fnode = [CUSTOM, func[0], func[1]]
        if source is None:
            r = rng.random()
            if r < 0.6:
                source = [LIST_IT, [LIST, 1, 2, 3], 0]
            elif r < 0.9:
                source = [RANGE_IT, 0, rng.randint(1, 5), 1]
            else:  # endless: an eager consumer never returns
                source = [CUSTOM, "itertools.count", [LIST, 0, 1]]
        if source[0] == CUSTOM:
            self.take(f"custom:{source[1]}")
            self.take("list")
        else:
            if source[0] == LIST_IT:
                self.take("list")
            self.take("iter")
        return [CUSTOM, "map", [LIST, fnode, source]]

    def same_hash(self, where: str, n: int) -> list[Any]:
        keys = [self.bigint(0, k * MERSENNE * (1 if k % 2 else -1)) for k in range(1, n + 1)]
        if where == "dict":
            self.take("dict")
            return [DICT, *keys, *([None] * n)]
        if where == "set":
            self.take("set")
            return [SET, *keys]
        self.take("frozenset")
        return [FROZENSET, *keys]

    def module_class_value(self, depth: int) -> Any:
        """enum / namedtuple / instance / state / method / exception nodes naming the target's classes."""
        rng = self.rng
        which = rng.randrange(8)
        if which == 0:
            return self.custom("enum", depth)
        if which == 1:
            return self.custom("namedtuple", depth)
        if which == 2:
            return self.instance(rng.choice(TARGET_CLASSES), depth)
        if which == 3:
            return self.custom("state", depth)
        if which == 4:
            return self.custom("method", depth)
        if which == 5:
            self.take("exc")
            return [EXC_CLS, T + rng.choice(["Noisy", "NoisyOS", "AppError"]), *self.exc_state(depth)]
        if which == 6:
            self.take("set")
            return [SET, self.instance("Hashy", depth), self.instance("Hashy", depth)]
        return self.custom("ref", depth)


# chains: (first element, next element given the previous one's slot) -> (node, the element's slot)

def _chain_tuple(b: Builder, prev: int) -> tuple[Any, int]:
    node = [TUPLE, [REF, prev]]
    return node, b.take("tuple")


def _chain_frozenset(b: Builder, prev: int) -> tuple[Any, int]:
    node = [FROZENSET, [REF, prev]]
    return node, b.take("frozenset")


def _chain_list(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("list")
    return [LIST, [REF, prev]], slot


def _chain_dict(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("dict")
    return [DICT, "k", [REF, prev]], slot


def _chain_exc_args(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("exc")
    b.take("tuple")
    return [EXC, "ValueError", [TUPLE, [REF, prev]], None, None, [], []], slot


def _chain_exc_context(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("exc")
    b.take("tuple")
    return [EXC, "ValueError", [TUPLE], [REF, prev], None, [], []], slot


def _chain_cell(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("custom:cell")
    b.take("list")
    return [CUSTOM, "cell", None, [LIST, [REF, prev]]], slot


def _chain_deque(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("custom:deque")
    b.take("list")
    return [CUSTOM, "deque", None, [LIST, [REF, prev]]], slot


def _chain_map(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("custom:map")
    b.take("list")
    b.take("custom:builtin")
    return [CUSTOM, "map", [LIST, [CUSTOM, "builtin", "len"], [REF, prev]]], slot


def _chain_enumerate(b: Builder, prev: int) -> tuple[Any, int]:
    node = [ENUMERATE, [REF, prev], 0]
    return node, b.take("iter")


def _chain_zip(b: Builder, prev: int) -> tuple[Any, int]:
    node = [ZIP, False, [REF, prev]]
    return node, b.take("iter")


def _chain_instance(b: Builder, prev: int) -> tuple[Any, int]:
    slot = b.take("obj")
    return [OBJECT, [REF, b.point_layout], [REF, prev]], slot


def _start_empty_tuple(b: Builder) -> Any:
    b.take("tuple")
    return [TUPLE]


def _start_list(b: Builder) -> Any:
    b.take("list")
    return [LIST]


def _start_iter(b: Builder) -> Any:
    b.take("list")
    b.take("iter")
    return [LIST_IT, [LIST, 1], 0]


def _start_exc(b: Builder) -> Any:
    b.take("exc")
    b.take("tuple")
    return [EXC, "ValueError", [TUPLE], None, None, [], []]


def _start_instance(b: Builder) -> Any:
    b.take("obj")
    b.point_layout = len(b.slots)  # type: ignore[attr-defined]
    return [OBJECT, b.layout(T + "Point", ["x"], []), 0]


CHAINS: dict[str, tuple[Callable[[Builder], Any], Callable[[Builder, int], tuple[Any, int]]]] = {
    "tuple": (_start_empty_tuple, _chain_tuple),
    "frozenset": (_start_empty_tuple, _chain_frozenset),
    "list": (_start_list, _chain_list),
    "dict": (_start_list, _chain_dict),
    "exc-args": (_start_exc, _chain_exc_args),
    "exc-context": (_start_exc, _chain_exc_context),
    "cell": (_start_list, _chain_cell),
    "deque": (_start_list, _chain_deque),
    "map": (_start_iter, _chain_map),
    "enumerate": (_start_iter, _chain_enumerate),
    "zip": (_start_iter, _chain_zip),
    "instance": (_start_instance, _chain_instance),
}


def _use_set(b: Builder, last: int) -> Any:
    b.take("set")
    return [SET, [REF, last]]


def _use_frozenset(b: Builder, last: int) -> Any:
    node = [FROZENSET, [REF, last]]
    b.take("frozenset")
    return node


def _use_dictkey(b: Builder, last: int) -> Any:
    b.take("dict")
    return [DICT, [REF, last], 1]


def _use_enum(b: Builder, last: int) -> Any:
    b.take("custom:enum")
    head = b.lst(lambda: b.class_ref(T + "Color"), lambda: [REF, last])
    return [CUSTOM, "enum", head]


def _use_plain(b: Builder, last: int) -> Any:
    return [REF, last]


CHAIN_USES: dict[str, Callable[[Builder, int], Any]] = {
    "set": _use_set, "frozenset": _use_frozenset, "dictkey": _use_dictkey, "enum": _use_enum, "plain": _use_plain,
}


# heads of each kind: (builder, depth) -> (head, body or _NO_BODY)

def _h_builtin(b: Builder, d: int) -> Any:
    return (b.rng.choice(SAFE_BUILTINS) if b.rng.random() < 0.8 else b.rng.choice(UNSAFE_BUILTINS)), _NO_BODY


def _h_ref(b: Builder, d: int) -> Any:
    rng = b.rng
    r = rng.random()
    if r < 0.4:
        return T + rng.choice(TARGET_CLASSES + TARGET_FUNCS), _NO_BODY
    if r < 0.7:
        return T + rng.choice(TARGET_OTHER), _NO_BODY
    return rng.choice(FOREIGN_REFS), _NO_BODY


def _h_method(b: Builder, d: int) -> Any:
    rng = b.rng

    def owner() -> Any:
        if rng.random() < 0.5:
            return b.class_ref()
        return b.instance(rng.choice(["Plain", "Point", "Hashy"]), d)

    name = rng.choice(["method", "__init__", "__hash__", "__eq__", "__iter__", "__setstate__", "attr", "evil", "_record",
                       "__class__", "mro", "a"])
    return b.lst(owner, lambda: name), _NO_BODY


def _h_cmethod(b: Builder, d: int) -> Any:
    rng = b.rng
    owner = rng.choice([lambda: b.p_list(d), lambda: b.p_dict(d), lambda: b.p_set(d), lambda: "text", lambda: b"b",
                        lambda: b.custom("deque", d), lambda: b.custom("bytearray", d), lambda: b.value(d)])
    name = rng.choice(["append", "pop", "clear", "keys", "format", "join", "extend", "__class__", "__init__",
                       "_private", "copy", "update", "nope"])
    return b.lst(owner, lambda: name), _NO_BODY


def _h_layout(b: Builder, d: int) -> Any:
    rng = b.rng
    names = rng.sample(ATTR_NAMES, rng.randint(0, 3))
    slot_names = rng.sample(["a", "b", "x", "__dict__", "hook"], rng.randint(0, 2))
    head = b.lst(lambda: b.class_ref(), lambda: [LIST, *names], lambda: [LIST, *slot_names])
    b.take("list")
    b.take("list")
    return head, _NO_BODY


def _h_obj(b: Builder, d: int) -> Any:
    if b.rng.random() < 0.5 and any(lab == "custom:layout" for lab in b.slots):
        return b.ref("custom:layout"), b.lst(*[lambda: b.value(d)] * b.rng.randint(0, 2))
    b.take("custom:layout")
    head, _ = _h_layout(b, d)
    return [CUSTOM, "layout", head], b.lst(*[lambda: b.value(d)] * b.rng.randint(0, 3))


def _h_state(b: Builder, d: int) -> Any:
    rng = b.rng
    cls = b.class_ref(T + rng.choice(["Stateful", "Plain", "Point", "Hashy", "Slotted", "Color", "Pair"])
                      if rng.random() < 0.85 else None)
    return cls, b.value(d)


def _h_cell(b: Builder, d: int) -> Any:
    rng = b.rng
    head = None if rng.random() < 0.9 else b.value(d)
    r = rng.random()
    body = b.lst(lambda: b.value(d)) if r < 0.7 else b.lst() if r < 0.85 else b.value(d)
    return head, body


def _h_fn(b: Builder, d: int) -> Any:
    rng = b.rng
    record = rng.choice(frame_records())
    ident, fingerprint = record[0], record[1]
    if rng.random() < 0.6:
        ident, fingerprint = next((r[0], r[1]) for r in frame_records() if r[0].endswith(":closing"))

    def path() -> Any:
        return b.lst(lambda: b.lst(lambda: rng.choice(["bump", "nope", "<lambda>", ""]), lambda: rng.choice([0, 0, 1, -1])))

    def closure() -> Any:
        return b.lst(*[lambda: b.custom("cell", d)] * rng.choice([0, 1, 1, 2]))

    def defaults() -> Any:
        return None if rng.random() < 0.7 else b.p_tuple(d)

    def attrs() -> Any:
        return None if rng.random() < 0.8 else {"a": 1}

    return b.lst(lambda: ident, lambda: fingerprint, path, lambda: rng.choice(["closing.<locals>.bump", "x", ""]),
                 closure, defaults, lambda: None if rng.random() < 0.8 else {"k": 1}, attrs), _NO_BODY


def _h_gen(b: Builder, d: int) -> Any:
    rng = b.rng
    record = list(rng.choice(frame_records()))
    return b.lst(lambda: record[0], lambda: record[1], lambda: record[2], lambda: record[3], lambda: record[4],
                 lambda: b.lst(*[lambda: b.value(d)] * len(record[5])), lambda: None), _NO_BODY


def _h_datetime(b: Builder, d: int) -> Any:
    rng = b.rng
    parts = [lambda: rng.choice([2024, 1, 9999, 0, 10000]), lambda: rng.randint(0, 13), lambda: rng.randint(0, 32),
             lambda: rng.randint(0, 24), lambda: rng.randint(0, 60), lambda: rng.randint(0, 60),
             lambda: rng.choice([0, 999999, 1000000]), lambda: _tz(b, d), lambda: rng.choice([0, 1, 2, True])]
    if rng.random() < 0.1:
        parts[rng.randrange(9)] = lambda: b.value(d)
    return b.lst(*parts), _NO_BODY


def _tz(b: Builder, d: int) -> Any:
    r = b.rng.random()
    if r < 0.6:
        return None
    if r < 0.8:
        return b.custom("timezone", d)
    if r < 0.9:
        return b.custom("zoneinfo", d)
    return b.value(d)


def _h_date(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: rng.choice([2024, 1, 0, 10000]), lambda: rng.randint(0, 13), lambda: rng.randint(0, 32)), _NO_BODY


def _h_time(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: rng.randint(0, 24), lambda: rng.randint(0, 60), lambda: rng.randint(0, 60),
                 lambda: rng.choice([0, 5, 1000000]), lambda: _tz(b, d), lambda: rng.choice([0, 1, 2])), _NO_BODY


def _h_timedelta(b: Builder, d: int) -> Any:
    return b.lst(b.small_int, b.small_int, b.small_int), _NO_BODY


def _h_timezone(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: b.custom("timedelta", d) if rng.random() < 0.8 else b.value(d),
                 lambda: rng.choice([None, "UTC", "", "x" * 100, 5])), _NO_BODY


def _h_zoneinfo(b: Builder, d: int) -> Any:
    return b.rng.choice(ZONE_KEYS) if b.rng.random() < 0.9 else b.value(d), _NO_BODY


def _h_decimal(b: Builder, d: int) -> Any:
    rng = b.rng
    if rng.random() < 0.05:
        return "1" + "0" * rng.randint(100, 3000), _NO_BODY
    return rng.choice(DECIMALS) if rng.random() < 0.9 else b.value(d), _NO_BODY


def _h_fraction(b: Builder, d: int) -> Any:
    rng = b.rng

    def part() -> Any:
        r = rng.random()
        if r < 0.6:
            return rng.choice([1, 2, 3, -1, 0, 10 ** 18, 2 ** 64 - 1])
        if r < 0.9:
            return b.bigint(rng.randint(9, 64))
        return b.value(d)

    return b.lst(part, part), _NO_BODY


def _h_uuid(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: rng.randbytes(rng.choice([16, 16, 15])), lambda: rng.choice([0, -1, None, 5, "x"])), _NO_BODY


def _h_complex(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: rng.choice([0.0, 1.5, math.nan, math.inf, 1]), lambda: rng.choice([0.0, -2.5, math.nan])), _NO_BODY


def _h_path(b: Builder, d: int) -> Any:
    return (b.rng.choice(PATHS) if b.rng.random() < 0.9 else b.value(d)), _NO_BODY


def _h_bytes(b: Builder, d: int) -> Any:
    return (b.rng.randbytes(b.rng.randint(0, 8)) if b.rng.random() < 0.9 else b.value(d)), _NO_BODY


def _h_range(b: Builder, d: int) -> Any:
    return b.lst(b.small_int, b.small_int, lambda: b.rng.choice([1, -1, 0, 3]) if b.rng.random() < 0.8 else b.small_int()), _NO_BODY


def _h_slice(b: Builder, d: int) -> Any:
    return b.lst(lambda: b.value(d), lambda: b.value(d), lambda: b.value(d)), _NO_BODY


def _h_ellipsis(b: Builder, d: int) -> Any:
    return (None if b.rng.random() < 0.9 else b.value(d)), _NO_BODY


def _h_deque(b: Builder, d: int) -> Any:
    rng = b.rng
    return rng.choice([None, None, 0, 1, 3, -1, 2 ** 63]), b.p_list(d)


def _attrs(b: Builder, d: int) -> Any:
    r = b.rng.random()
    if r < 0.7:
        return None
    if r < 0.85:
        return {"a": 1, "b": "x"}
    return b.value(d)


def _dict_body(b: Builder, d: int) -> Any:
    return b.p_dict(d) if b.rng.random() < 0.7 else b.p_map(d) if b.rng.random() < 0.7 else b.value(d)


def _h_mapping(b: Builder, d: int) -> Any:
    return _attrs(b, d), _dict_body(b, d)


def _h_defaultdict(b: Builder, d: int) -> Any:
    return b.func(d), _dict_body(b, d)


def _h_chainmap(b: Builder, d: int) -> Any:
    rng = b.rng
    if rng.random() < 0.8:
        b.take("dict")
        return None, [DICT, "maps", b.lst(*[lambda: _dict_body(b, d)] * rng.randint(0, 2))]
    return b.value(d), b.value(d)


def _h_enum(b: Builder, d: int) -> Any:
    rng = b.rng
    cls = rng.choice(["Color", "Level", "Perm", "Shade", "Plain", "Pair"])
    value = rng.choice([1, 2, 3, 4, 7, "green", 99, -1, 2 ** 63, None])
    if rng.random() < 0.2:
        return b.lst(lambda: b.class_ref(T + cls), lambda: b.value(d)), _NO_BODY
    if cls == "Color" and rng.random() < 0.3:
        return b.lst(lambda: b.class_ref(T + cls), lambda: b.tup(lambda: 1, lambda: 2)), _NO_BODY
    return b.lst(lambda: b.class_ref(T + cls), lambda: value), _NO_BODY


def _h_namedtuple(b: Builder, d: int) -> Any:
    rng = b.rng
    cls = rng.choice(["Pair", "Typed", "MetaTuple", "Plain", "Color"])
    n = rng.choice([2, 2, 1, 0, 3])
    return b.lst(lambda: b.class_ref(T + cls), lambda: b.tup(*[lambda: b.value(d)] * n)
                 if rng.random() < 0.9 else b.value(d)), _NO_BODY


def _h_map(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: b.func(d), *[lambda: b.iterable(d)] * rng.choice([1, 1, 2, 0])), _NO_BODY


def _h_filter(b: Builder, d: int) -> Any:
    return b.lst(lambda: b.func(d), lambda: b.iterable(d)), _NO_BODY


def _h_count(b: Builder, d: int) -> Any:
    rng = b.rng
    return b.lst(lambda: rng.choice([0, 1, -5, 1.5, math.nan, 2 ** 63]) if rng.random() < 0.8 else b.small_int(),
                 lambda: rng.choice([1, 0, -1, 0.5, math.inf])), _NO_BODY


def _h_repeat(b: Builder, d: int) -> Any:
    rng = b.rng
    if rng.random() < 0.5:
        return b.lst(lambda: b.value(d)), _NO_BODY
    return b.lst(lambda: b.value(d), lambda: rng.choice([0, 1, 3, -1, 2 ** 63 - 1])), _NO_BODY


def _reduce_head(name: str) -> Callable[[Builder, int], Any]:
    def make(b: Builder, d: int) -> Any:
        rng = b.rng
        it = lambda: b.iterable(d)  # noqa: E731
        fn = lambda: b.func(d)  # noqa: E731
        num = lambda: rng.choice([0, 1, 2, None, -1, 2 ** 63 - 1]) if rng.random() < 0.9 else b.value(d)  # noqa: E731
        args = {
            "cycle": [it], "islice": [it, num, num, num], "chain": [it, it], "compress": [it, it],
            "dropwhile": [fn, it], "takewhile": [fn, it], "starmap": [fn, it], "accumulate": [it, fn],
            "groupby": [it, fn], "_grouper": [lambda: b.custom("itertools.groupby", d), lambda: b.value(d)],
            "zip_longest": [it, it], "product": [it, it], "permutations": [it, num], "combinations": [it, num],
            "combinations_with_replacement": [it, num], "tee": [it],
            "_tee_dataobject": [it, lambda: b.p_list(d), lambda: b.value(d)],
            "pairwise": [it], "batched": [it, num],
        }[name]
        if rng.random() < 0.1:
            args = args[:rng.randint(0, len(args))]
        r = rng.random()
        if r < 0.05:
            return b.lst(), _NO_BODY
        args_node = lambda: b.tup(*args)  # noqa: E731
        if r < 0.7:
            return b.lst(args_node), _NO_BODY
        return b.lst(args_node, lambda: b.value(d)), _NO_BODY

    return make


_HEADS: dict[str, Callable[[Builder, int], Any]] = {
    "builtin": _h_builtin, "ref": _h_ref, "method": _h_method, "cmethod": _h_cmethod, "layout": _h_layout,
    "obj": _h_obj, "state": _h_state, "cell": _h_cell, "fn": _h_fn, "gen": _h_gen,
    "gen-done": lambda b, d: (None, _NO_BODY), "datetime": _h_datetime, "date": _h_date, "time": _h_time,
    "timedelta": _h_timedelta, "timezone": _h_timezone, "zoneinfo": _h_zoneinfo, "decimal": _h_decimal,
    "fraction": _h_fraction, "uuid": _h_uuid, "complex": _h_complex, "purepath.posix": _h_path,
    "purepath.windows": _h_path, "path.posix": _h_path, "path.windows": _h_path, "bytearray": _h_bytes,
    "memoryview": _h_bytes, "range": _h_range, "slice": _h_slice, "ellipsis": _h_ellipsis, "deque": _h_deque,
    "ordereddict": _h_mapping, "counter": _h_mapping, "defaultdict": _h_defaultdict, "chainmap": _h_chainmap,
    "enum": _h_enum, "namedtuple": _h_namedtuple, "map": _h_map, "filter": _h_filter, "itertools.count": _h_count,
    "itertools.repeat": _h_repeat, **{f"itertools.{name}": _reduce_head(name) for name in REDUCE_KINDS},
}

_WEIGHTED: list[tuple[Callable[[Builder, int], Any], float]] = [
    (Builder.p_scalar, 22), (Builder.p_list, 8), (Builder.p_tuple, 8), (Builder.p_dict, 5), (Builder.p_map, 3),
    (Builder.p_set, 3), (Builder.p_frozenset, 3), (Builder.p_bigint, 3), (Builder.p_ustr, 1.5), (Builder.p_ref, 8),
    (Builder.p_again, 1), (Builder.p_custom, 16), (Builder.p_exception, 3), (Builder.p_group, 1),
    (Builder.p_iterator, 7), (Builder.p_object, 4), (Builder.p_shaped, 2), (Builder.p_adversarial, 1.5),
]
_PRODUCTIONS = [p for p, _ in _WEIGHTED]
_CUM_WEIGHTS = [sum(w for _, w in _WEIGHTED[:i + 1]) for i in range(len(_WEIGHTED))]


# --------------------------------------------------------------------------- placing values into real frames

def fill_frames(rng: random.Random, tree: list[Any], make: Callable[[Builder], Any], budget: int = 40) -> list[Any]:
    """Replace the values of the real snapshot ``tree`` (from some frame on) with ``make(builder)``,
    the builder knowing how many memo slots the values before them take."""
    slots: list[str] = []
    frames = tree[2:]
    replace_from = rng.randrange(len(frames)) if len(frames) > 1 and rng.random() < 0.5 else 0
    builder = Builder(rng, slots, budget)
    for i, frame in enumerate(frames):
        if type(frame) is not list or len(frame) != 7:
            continue
        frees = frame[6]
        if type(frees) is list and len(frees) == 2 and type(frees[1]) is list:
            if i >= replace_from and rng.random() < 0.5:
                frees[1] = [builder.custom("cell", 3) if rng.random() < 0.8 else make(builder) for _ in frees[1]]
            else:
                slots.extend("?" * sum(count_slots(x) for x in frees[1]))
        values = frame[5]
        if type(values) is not list:
            continue
        for j, value in enumerate(values):
            if i >= replace_from and (rng.random() < 0.8 or j == len(values) - 1):
                values[j] = make(builder)
            else:
                slots.extend("?" * count_slots(value))
        if rng.random() < 0.05 and values:  # names and values disagree, or names are a subset
            frame[4] = ",".join(frame[4].split(",")[:-1]) if rng.random() < 0.5 else frame[4]
            del values[-1]
    return tree


def _with_values(rng: random.Random, make: Callable[[Builder], Any], budget: int = 40) -> bytes:
    start, step, data = rng.choice(_fillable())
    return pack(fill_frames(rng, unpack(data), make, budget))


_FILLABLE: list[tuple[str, int, bytes]] | None = None


def _fillable() -> list[tuple[str, int, bytes]]:
    """Real snapshots with at least one value (or cell) to replace."""
    global _FILLABLE
    if _FILLABLE is None:
        _FILLABLE = [t for t in templates() if any(r[5] or r[6] for r in unpack(t[2])[2:])]
    return _FILLABLE


# --------------------------------------------------------------------------- mutations

def mutate_bytes(rng: random.Random, data: bytes, other: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.randrange(7)
        at = rng.randrange(len(buf)) if buf else 0
        if op == 0 and buf:
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[at:]
        elif op == 2:
            buf[at:at] = rng.randbytes(rng.randint(1, 4))
        elif op == 3:
            del buf[at:at + rng.randint(1, 4)]
        elif op == 4:
            buf = buf[:at] + bytearray(other[rng.randint(0, len(other)):])
        elif op == 5 and buf:
            buf[at] = rng.choice([0x00, 0x7F, 0x80, 0x90, 0xC0, 0xC1, 0xC2, 0xC3, 0xCC, 0xD0, 0xDC, 0xDD, 0xDE, 0xDF,
                                  0xFF, 0x91, 0x92, 0x93, 0x96, 0x97, 0xA0, 0xC4, 0xD4, 0xD9])
        elif op == 6 and buf:  # a big length field
            buf[at:at] = bytes([rng.choice([0xDC, 0xDD, 0xDE, 0xDF, 0xC6, 0xDB])]) + rng.randbytes(4)
    return bytes(buf)


def _slots_of(tree: Any) -> list[tuple[Any, Any]]:
    found: list[tuple[Any, Any]] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            for i, item in enumerate(node):
                found.append((node, i))
                todo.append(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                found.append((node, key))
                todo.append(value)
    return found


def mutate_tree(rng: random.Random, tree: Any, donor: Any) -> None:
    slots = _slots_of(tree)
    if not slots:
        return
    for _ in range(rng.choice([1, 1, 2, 3])):
        container, key = rng.choice(slots)
        try:
            current = container[key]
        except (IndexError, KeyError):
            continue
        op = rng.randrange(9)
        if op == 0:
            new: Any = Builder(rng, [], 6).value(3)
        elif op == 1 and type(current) is int:
            new = current + rng.choice([-1, 1, -2, 2, 1 << 32, -(1 << 31)])
        elif op == 2:
            donors = _slots_of(donor)
            if not donors:
                continue
            d_container, d_key = rng.choice(donors)
            new = d_container[d_key]
        elif op == 3:
            new = [current]
        elif op == 4:
            new = [] if isinstance(current, list) else {} if isinstance(current, dict) else None
        elif op == 5 and isinstance(container, list):
            container.insert(key, current)
            continue
        elif op == 6:
            del container[key]
            continue
        elif op == 7 and isinstance(current, list) and current and type(current[0]) is int:
            new = [rng.randrange(25), *current[1:]]  # another tag, same fields
        else:
            new = Builder(rng, [], 2).scalar()
        container[key] = new


def mutate_frame(rng: random.Random, tree: list[Any]) -> None:
    """Mutations of the envelope and the frame records themselves."""
    records = frame_records()
    frames = tree[2:]
    op = rng.randrange(10)
    frame = rng.choice(frames) if frames else None
    if type(frame) is not list or len(frame) != 7:
        frame = None
    if op == 0 and frame is not None:
        frame[0] = rng.choice([r[0] for r in records] + FOREIGN_REFS + [T + n for n in TARGET_CLASSES + TARGET_OTHER])
    elif op == 1 and frame is not None:
        frame[1] = rng.choice([r[1] for r in records] + [b"", b"x" * 8])
    elif op == 2 and frame is not None:
        frame[2] = rng.choice([0, 1, 2, 3, 4, 5, 99, -1, 2 ** 63, None, "1"])
    elif op == 3 and frame is not None:
        frame[3] = rng.choice([None, 0, -1, 2 ** 64 - 1, "x", [1]])
    elif op == 4 and frame is not None:
        frame[4] = rng.choice(["", "x", "x,x", ",", "n,_dg_fk1,_dg_wm2,_dg_wok5", "_dg_yf1", "k,_dg_it1", "items",
                               "_dg_it1,_dg_t2", "_dg_e1", "x,got", "got", 5, None])
    elif op == 5 and frame is not None:
        frame[6] = rng.choice([None, [], [[], []], [["count"], []], [5, []], [["count"], [1]], [[1], [[9, "cell", None, [1, 1]]]],
                               [["count", "count"], [[9, "cell", None, [1, 1]], [9, "cell", None, [1]]]],
                               [["x"], [[9, "cell", None, [1, 1]]]], [None, [1]], [{}, []], [7, [2]]])
    elif op == 6:
        tree.append(list(rng.choice(records)))  # an extra frame: a wrong delegation
    elif op == 7 and len(frames) > 1:
        del tree[rng.randrange(2, len(tree))]
    elif op == 8:
        tree[1] = rng.choice([0, 2, -1, 1.0, True, None, 2 ** 64 - 1])
    elif frame is not None:
        if rng.random() < 0.5:
            frame.append(None)
        else:
            frame.pop()


# --------------------------------------------------------------------------- explicit adversarial inputs

def dag_in_set(k: int = 64, where: str = "set") -> bytes:
    """A set (or frozenset, dict key, enum value, ...) holding T(k), a DAG of k+1 tuples with 2**k leaves."""
    return with_value(Builder(random.Random(0)).dag_in(where, k))


def deep_chain(n: int = 200_000, kind: str = "tuple", use: str = "set") -> bytes:
    """``n`` objects of ``kind`` each holding the previous one through a ref, the last put into ``use``."""
    return with_value(Builder(random.Random(0)).chain(kind, n, use))


def eager_itertools(name: str = "product", func: tuple[str, str] = ("builtin", "print"),
                    source: str = "list") -> bytes:
    """itertools.<name>(map(func, source)) (3.10/3.11 rebuild it with ``name(*args)``, which reads the map)."""
    b = Builder(random.Random(0))
    src = {"list": [LIST_IT, [LIST, 1, 2, 3], 0], "range": [RANGE_IT, 0, 3, 1],
           "count": [CUSTOM, "itertools.count", [LIST, 0, 1]]}[source]
    return with_value(b.eager_itertools(name, 3, func, src))


def huge_fraction(nbytes: int = 100_000) -> bytes:
    """Fraction(a, b) with two coprime-ish ints of ``nbytes`` bytes each (gcd of huge ints)."""
    rng = random.Random(nbytes)
    a = int.from_bytes(rng.randbytes(nbytes), "little") | 1
    c = int.from_bytes(rng.randbytes(nbytes), "little") | 1
    b = Builder(rng)
    return with_value([CUSTOM, "fraction", [LIST, b.bigint(0, a), b.bigint(0, c)]])


def huge_decimal(digits: int = 1_000_000) -> bytes:
    return with_value([CUSTOM, "decimal", "1" * digits])


def many_empty(n: int = 500_000, tag: int = LIST) -> bytes:
    """A list of ``n`` empty containers (2 bytes each on the wire): memory per input byte."""
    if tag == DICT:
        return with_value([LIST, *[{}] * n])
    return with_value([LIST, *[[tag]] * n])


def same_hash_keys(n: int = 50_000, where: str = "dict") -> bytes:
    """A dict (or set, frozenset) whose int keys k * (2**61 - 1) all hash to 0."""
    return with_value(Builder(random.Random(0)).same_hash(where, n))


def bigint_rendered(nbytes: int = 2000, where: str = "plain") -> bytes:
    """An int of more than 4,300 decimal digits where the inspector renders it."""
    big = int.from_bytes(b"\x7f" * nbytes, "little")
    node = [BIGINT, big.to_bytes(nbytes + 1, "little", signed=True)]
    if where == "plain":
        return with_value(node)
    if where == "range-iterator":
        return with_value([RANGE_IT, 0, node, 1])
    if where == "fraction":
        return with_value([CUSTOM, "fraction", [LIST, node, 3]])
    if where == "exception":
        return with_value([EXC, "ValueError", [TUPLE, node], None, None, [], []])
    if where == "held-generator-line":
        record = next(r for r in frame_records() if r[0].endswith(":inner"))
        return with_value([CUSTOM, "gen", [LIST, record[0], record[1], record[2], node, record[4],
                                           [LIST, *record[5]], None]])
    if where == "instance-attribute-name":
        return with_value([OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Point"], [LIST, node], [LIST]]], 1])
    raise ValueError(where)


def module_class_node(which: str) -> bytes:
    """enum / namedtuple / instance nodes naming classes of the target, each aimed at one user hook."""
    nodes = {
        "enum-missing": [CUSTOM, "enum", [LIST, [CUSTOM, "ref", T + "Color"], 99]],
        "enum-hash": [CUSTOM, "enum", [LIST, [CUSTOM, "ref", T + "Color"],
                                       [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Hashy"], [LIST, "a"], [LIST]]], 1]]],
        "namedtuple-meta": [CUSTOM, "namedtuple", [LIST, [CUSTOM, "ref", T + "MetaTuple"], [TUPLE, 1, 2]]],
        "namedtuple": [CUSTOM, "namedtuple", [LIST, [CUSTOM, "ref", T + "Pair"], [TUPLE, 1, 2]]],
        "set-of-hashy": [SET, [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Hashy"], [LIST, "a"], [LIST]]], 1],
                         [OBJECT, [REF, 2], 2]],
        "shadowed-slot": [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Shadow"], [LIST], [LIST, "a"]]], 1],
        "exception-setattr": [EXC_CLS, T + "Noisy", [TUPLE, "x"], None, None, [], ["a", 1]],
        "oserror-setattr": [EXC_CLS, T + "NoisyOS", [TUPLE, 2, "x"], None, None, ["errno", 2], []],
        "module-getattr": [CUSTOM, "ref", T + "missing_name"],
        "class-descriptor": [CUSTOM, "ref", T + "Described.attr"],
        "metaclass-getattr": [CUSTOM, "ref", T + "WithMeta.anything"],
        "enumerate-iter": [ENUMERATE, [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Iterable"], [LIST, "a"], [LIST]]], 1], 0],
        "map-iter": [CUSTOM, "map", [LIST, [CUSTOM, "builtin", "len"],
                                     [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Iterable"], [LIST, "a"], [LIST]]], 1]]],
        "tee-eq": [CUSTOM, "itertools.tee", [LIST, [TUPLE, [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Hashy"],
                                                                                        [LIST], [LIST]]]]]]],
        "islice-index": [CUSTOM, "itertools.islice", [LIST, [TUPLE, [LIST_IT, [LIST, 1], 0],
                                                             [OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Iterable"], [LIST, "a"], [LIST]]], 1]]]],
    }
    return with_value(nodes[which])


def saved_exception_setattr() -> bytes:
    """``handler`` suspended inside its except block, its saved exception of a class with ``__setattr__``:
    restoring re-raises it and puts its ``__context__`` back."""
    tree = template("handler(2)", 1)
    tree[2][5] = [[EXC_CLS, T + "Noisy", [TUPLE, "boom"], None, None, [], []]]
    return pack(tree)


def inspector_layout(names: Any = 5) -> bytes:
    """An instance whose layout's attribute names are not a list (the inspector renders such heads)."""
    return with_value([OBJECT, [CUSTOM, "layout", [LIST, [CUSTOM, "ref", T + "Point"], names, [LIST]]], 1])


def inspector_frees(names: Any = 7) -> bytes:
    """A frame whose closure names are not a list."""
    tree = template("closing(3)", 1)
    tree[2][6] = [names, [[CUSTOM, "cell", None, [LIST, 1]]]]
    return pack(tree)


# --------------------------------------------------------------------------- the families

def _f_tree(rng: random.Random, large: bool) -> bytes:
    depth = rng.randint(2, 6)
    budget = rng.choice([5, 10, 20, 40, 80]) * (200 if large else 1)
    return _with_values(rng, lambda b: b.value(depth), budget)


def _f_kinds(rng: random.Random, large: bool) -> bytes:
    def make(b: Builder) -> Any:
        names = b.kinds
        return b.custom(rng.choice(names), rng.randint(1, 4), plausible=rng.random() < 0.85)

    return _with_values(rng, make, 30)


def _f_bytes(rng: random.Random, large: bool) -> bytes:
    seeds = templates()
    data = rng.choice(seeds)[2] if rng.random() < 0.6 else _f_tree(rng, False)
    return mutate_bytes(rng, data, rng.choice(seeds)[2])


def _f_msgpack(rng: random.Random, large: bool) -> bytes:
    seeds = templates()
    data = rng.choice(seeds)[2] if rng.random() < 0.5 else _f_tree(rng, False)
    tree = unpack(data)
    mutate_tree(rng, tree, unpack(rng.choice(seeds)[2]))
    try:
        return pack(tree)
    except (TypeError, ValueError, OverflowError):
        return data


def _f_frame(rng: random.Random, large: bool) -> bytes:
    data = rng.choice(templates())[2] if rng.random() < 0.5 else _f_tree(rng, False)
    tree = unpack(data)
    for _ in range(rng.choice([1, 1, 2])):
        mutate_frame(rng, tree)
    try:
        return pack(tree)
    except (TypeError, ValueError, OverflowError):
        return data


def _f_dag(rng: random.Random, large: bool) -> bytes:
    k = rng.randint(40, 80) if large else rng.choice([8, 16, 24, rng.randint(25, 64)])
    where = rng.choice(["set", "frozenset", "dictkey", "enum", "counter", "sorted-set", "tuple"])
    return with_value(Builder(rng).dag_in(where, k))


def _f_chain(rng: random.Random, large: bool) -> bytes:
    n = rng.randint(50_000, 200_000) if large else rng.randint(10, 400)
    kind = rng.choice(list(CHAINS))
    if kind in ("map", "instance", "exc-args", "exc-context", "cell", "deque") and large:
        n //= 4  # bigger elements: keep the input near 1-2 MB
    return with_value(Builder(rng).chain(kind, n, rng.choice(list(CHAIN_USES))))


def _f_itertools(rng: random.Random, large: bool) -> bytes:
    b = Builder(rng)
    return with_value(b.eager_itertools(rng.choice(EAGER_ITERTOOLS), 3))


def _f_numbers(rng: random.Random, large: bool) -> bytes:
    r = rng.random()
    if r < 0.5:
        return huge_fraction(rng.randint(100_000, 400_000) if large else rng.randint(100, 1800))
    if r < 0.8:
        return huge_decimal(rng.randint(200_000, 1_000_000) if large else rng.randint(100, 3000))
    return bigint_rendered(rng.randint(1786, 3000), rng.choice(["plain", "range-iterator", "fraction", "exception",
                                                                "held-generator-line", "instance-attribute-name"]))


def _f_empty(rng: random.Random, large: bool) -> bytes:
    n = rng.randint(200_000, 500_000) if large else rng.randint(10, 1500)
    return many_empty(n, rng.choice([LIST, SET, DICT, LIST, TUPLE, FROZENSET]))


def _f_same_hash(rng: random.Random, large: bool) -> bytes:
    n = rng.randint(30_000, 90_000) if large else rng.randint(2, 300)
    return same_hash_keys(n, rng.choice(["dict", "set", "frozenset"]))


def _f_classes(rng: random.Random, large: bool) -> bytes:
    r = rng.random()
    if r < 0.4:
        return module_class_node(rng.choice(["enum-missing", "enum-hash", "namedtuple-meta", "namedtuple", "set-of-hashy",
                                             "shadowed-slot", "exception-setattr", "oserror-setattr", "module-getattr",
                                             "class-descriptor", "metaclass-getattr", "enumerate-iter", "map-iter",
                                             "islice-index"]))
    if r < 0.5:
        return rng.choice([inspector_layout(rng.choice([5, "ab", None, 2.5])), inspector_frees(rng.choice([7, None, 1.5]))])
    return _with_values(rng, lambda b: b.module_class_value(3), 20)


FAMILIES: list[tuple[str, Callable[[random.Random, bool], bytes], float]] = [
    ("tree", _f_tree, 36),
    ("kinds", _f_kinds, 16),
    ("bytes", _f_bytes, 8),
    ("msgpack", _f_msgpack, 10),
    ("frame", _f_frame, 5),
    ("dag", _f_dag, 3),
    ("chain", _f_chain, 4),
    ("itertools", _f_itertools, 2),
    ("numbers", _f_numbers, 3),
    ("empty", _f_empty, 2),
    ("same-hash", _f_same_hash, 2),
    ("classes", _f_classes, 5),
]
_FAMILY_CUM = [sum(w for _, _, w in FAMILIES[:i + 1]) for i in range(len(FAMILIES))]
_LARGE_FAMILIES = {"tree", "dag", "chain", "numbers", "empty", "same-hash"}


def generate(seed: int, *, large: float = 0.01, families: list[str] | None = None) -> tuple[str, bytes]:
    """The input of ``seed``: ``(family, data)``. ``large`` is the share of inputs of about 1 MB."""
    rng = random.Random(seed)
    if families:
        chosen = [f for f in FAMILIES if f[0] in families]
        name, make, _ = rng.choice(chosen)
    else:
        name, make, _ = rng.choices(FAMILIES, cum_weights=_FAMILY_CUM)[0]
    is_large = name in _LARGE_FAMILIES and rng.random() < large * 2
    return name + ("-large" if is_large else ""), make(rng, is_large)
