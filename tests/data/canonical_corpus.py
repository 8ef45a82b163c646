"""Statements whose canonical digests are checked in (tests/test_canonical.py): never imported or run."""
# ruff: noqa
# Every top-level statement below is one sample; tests/data/canonical_corpus.digests holds their digests.
# This file must parse on every supported Python (3.10+): samples of newer syntax are in the test itself.
import os.path as osp
from ..pkg import (a as b, c)
x = 1; y = 2.5; z = 3j; w = True; v = None; u = ...; t = b"by\x00tes"; s = "str"; r = u"unicode"
big = 123456789012345678901234567890 + 0x1F + 0o17 + 0b101 + 1_000 + 1e10 + 1e999
name = f"{user!r:>{width}} and {value:.2f} {{literal}} {'nested'} {obj['key']!s}"
quoted = f'{a["k"]}' f"{b!a}" 'plain' f"{c=}" f"{d = :>4}"
implicit = f"one " "two " f"{three}" "four"
spec = f"{x:{'>' if left else '<'}{10}}" + f"{x:}" + f"{x!r:}"
raw = rf"\d{n}" + Rb"\x" + br"\y"
match command:
    case Point(x=0, y=0) if debug:
        pass
    case [first, *rest] | (first, *rest):
        pass
    case {"kind": "move", **others}:
        pass
    case Click(position=(x, y)) as click:
        pass
    case 1 | -2 | 3.0 | 4 + 5j | "s" | b"b" | None | True:
        pass
    case Color.RED:
        pass
    case str() | bytes():
        pass
    case _:
        pass
if (n := len(items)) > 10 and (m := n // 2):
    pass
key = lambda item, *args, scale=2, **kw: (item.score * scale, -item.rank)
first, *middle, last = [*head, *tail]
merged = {**defaults, "extra": 1, **overrides}
call(*args, **kwargs, key=value)
def outer(a: int, /, b: "str" = "x", *args: tuple[int, ...], c: list[int] | None = None, **kw: dict) -> None:
    def inner(x=1):
        return x
    nonlocal_value: int
    annotated: dict[str, list[int]] = {}
    global g
    return inner(a)
class Thing(Base, metaclass=Meta):
    field: int = 0
    def method(self) -> "Thing":
        return self
try:
    risky()
except (ValueError, TypeError) as exc:
    handle(exc)
except Exception:
    raise RuntimeError("wrapped") from None
else:
    fine()
finally:
    cleanup()
with open(path) as fh, lock, ctx() as (a, b):
    fh.read()
with (open(p) as f1, open(q) as f2):
    pass
async def worker(queue):
    async with session() as s:
        async for item in queue:
            await s.send(item)
    results = [r async for r in stream() if await r.ok()]
    return await gather(*(f() for f in funcs))
def generator():
    received = yield first
    yield from other()
    total = (yield) + (yield 2)
values = [x * y for x in range(3) if x for y in range(x)]
sets = {x for x in data}, {k: v for k, v in pairs}, (g for g in gens)
sliced = seq[1:2, ::3, ...][::-1]
cond = a if b else c
chain = a < b <= c != d is not e not in f
assert isinstance(x, int), "message"
del a[0], b.c
for i, (j, k) in enumerate(pairs):
    continue
else:
    pass
while not done:
    break
else:
    pass
aug += 1; aug //= 2; aug @= m; aug **= 2
bits = ~a & b | c ^ d << 2 >> 1
logic = not a or b and c
text = "implicit" "concat" 'enation'
doc = """triple
quoted"""
decorated = staticmethod(lambda: (yield))
