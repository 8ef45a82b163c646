"""transpiler.canonical: the same source gives the same canonical text and digest on every Python version."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from transpiler.canonical import canonical, digest

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "canonical_corpus.py"
DIGESTS = DATA / "canonical_corpus.digests"


def corpus_digests() -> list[str]:
    """One line per top-level statement of the corpus: ``line:column digest text``."""
    source = CORPUS.read_text()
    lines = source.splitlines()
    return [f"{s.lineno}:{s.col_offset} {digest(canonical(s))} {lines[s.lineno - 1].strip()[:60]}"
            for s in ast.parse(source).body]


def of(source: str) -> str:
    return canonical(ast.parse(source))


def test_corpus_digests_are_the_checked_in_ones() -> None:
    expected = [line for line in DIGESTS.read_text().splitlines() if not line.startswith("#")]
    drifted = sorted(set(corpus_digests()) ^ set(expected))
    assert not drifted, "canonical text drifted for:\n" + "\n".join(drifted)
    assert len(expected) > 40


NEWER = [  # syntax some versions cannot parse: (minimum version, source, digest)
    ((3, 11), "try:\n    a()\nexcept* (E, F) as g:\n    pass\nexcept* G:\n    raise\nelse:\n    b()\n"
              "finally:\n    c()\n", "682482f0217a5895"),
    ((3, 12), "type Alias[T] = list[T]\n", "38606c1a32d25ba7"),
    ((3, 12), "def f[T: int, *Ts, **P](x: T) -> T:\n    return x\n", "44fe83a47a1dd668"),
    ((3, 12), "class C[T](Base[T]):\n    pass\n", "ef5dc1b51f50474c"),
    ((3, 12), 'x = f"{a["k"]} {f"{b!r:>{w}}"}"\n', "300d9424a11ebb01"),
]


@pytest.mark.parametrize(("version", "source", "expected"), NEWER, ids=[s.split("\n")[0] for _, s, _ in NEWER])
def test_newer_syntax_digests(version: tuple[int, int], source: str, expected: str) -> None:
    if sys.version_info < version:
        pytest.skip(f"Python {version[0]}.{version[1]} syntax: older versions cannot parse it, so no code they "
                    "compile has it (its digest is checked on every version that can)")
    assert digest(of(source)) == expected


SAME = [
    ("x = f(a, b)", "x=f( a ,\n  b, )  # comment"),
    ("x = 'a'", 'x = u"a"'),  # a constant's kind is ignored
    ("x = f'ab{y}'", "x = f'a' f'b{y}'"),  # 3.12 splits the literal parts of concatenated f-strings
    ("x = f'a{y}b'", "x = f'a' '' f'{y}' 'b'"),
    ("x = f'{y}'", "x = f'{y:}'"),  # an empty format spec is absent or empty depending on the version
    ("def f(x: int) -> None:\n    return", "def f(x : int)->None:\n\n    # c\n    return  # type: ignore"),
    ("if a:\n    pass", "if (a):\n    pass"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_formatting_and_version_details_are_ignored(a: str, b: str) -> None:
    assert of(a) == of(b)


DIFFERENT = ["x = 1", "x = 1.0", "x = True", "x = '1'", "x = b'1'", "x = 1j", "x = None", "x = ...",
             "x = (1,)", "x = [1]", "x = y", "x = 'y'", "y = 1", "x: int = 1", "x += 1", "x = -1", "x = 2",
             "x = f'{y!r}'", "x = f'{y}'", "x = f'{y:>2}'", "x = 'a' 'b'", "x = 'a', 'b'"]


def test_different_code_has_different_canonical_text() -> None:
    texts = [of(s) for s in DIFFERENT]
    assert len(set(texts)) == len(texts)


def test_constants_are_rendered_with_their_type() -> None:
    assert of("1") == "Module(body=[Expr(value=Constant(value=int:1))])"
    assert "bytes:b'a\\x00'" in of("b'a\\0'")
    assert "ellipsis:Ellipsis" in of("...")


def test_digest() -> None:
    assert digest("a", "bc") != digest("ab", "c") != digest("abc")
    assert digest() != digest("")
    assert digest("x") == "53fd9599d7cdb571"
    assert len(digest("é", "\ud800")) == 16  # any text, lone surrogates included
