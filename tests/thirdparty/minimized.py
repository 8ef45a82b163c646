"""Minimized causes of the third-party test failures found by ``tests/thirdparty/run_library.py`` (issue 11).

    python -m tests.thirdparty.minimized [--python EXE]

runs every case below natively, compiled (``all_generators=True``) and in chaos mode (``chaos=True``), each
in a child interpreter, and prints what each returns.  A case whose three results are not all equal
shows a behaviour difference; the docstring of each case says which library test it stands for.

Every case found so far passes compiled and differs only in chaos mode, for one reason: a round trip
carries the generator's values by copy, so objects it shares with a caller that is not part of the
snapshot (``self``, an argument, the items it yields) are no longer the caller's objects after the
restore.  Mutations through them land on the copy, and identity tests (``is``, ``list.index`` of an
object without ``__eq__``) fail.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODES = ("native", "compiled", "chaos")


class Node:
    """A tree node that iterates over its own children (jinja2.nodes.Node, sqlparse.sql.TokenList)."""

    def __init__(self, name: str, *children: Node) -> None:
        self.name = name
        self.children = list(children)
        self.ctx = "load"

    def iter_children(self) -> Iterator[Node]:
        # jinja2 Node.iter_child_nodes / iter_fields, sqlparse TokenList.get_sublists / flatten
        for child in self.children:  # noqa: UP028 -- as the libraries write it
            yield child


def case_mutate_yielded_items() -> list[str]:
    """jinja2 test_compile.py::test_{block,loop,top_level}_set_vars_unpacking_deterministic:
    ``Node.set_ctx("store")`` walks ``iter_child_nodes()`` and sets ``ctx`` on what it yields; after a
    round trip the generator's ``self`` is a copy, so the later names of ``{% set a, b, c = t %}`` keep
    ``ctx="load"`` in the real tree and the compiler emits loads instead of stores.  Same in sqlparse
    (test_grouping_identifier_function, TestSpacesAroundOperators::test_bools,
    TestFormatReindent::test_parenthesis): the grouping and filters rewrite the groups that
    ``get_sublists()`` yields, and their changes land on copies."""
    root = Node("target", Node("a"), Node("b"), Node("c"))
    for node in root.iter_children():
        node.ctx = "store"
    return [child.ctx for child in root.children]


def case_index_of_yielded_items() -> list[Any]:
    """sqlparse TestFormatReindent::test_identifier_list and 6 more (``ValueError: <Identifier ...> is not
    in list``): ``tlist.insert_before(token, ...)`` looks up, with ``list.index``, a token that
    ``IdentifierList.get_identifiers()`` / ``get_sublists()`` yielded; Token has no ``__eq__``, and after a
    round trip the generator yields copies.  test_parse.py::test_get_token_at_offset: ``flatten()``
    yields a copy, compared with ``==`` (identity) to the statement's own token."""
    root = Node("list", Node("a"), Node("b"), Node("c"))
    found: list[Any] = []
    for node in root.iter_children():
        try:
            found.append(root.children.index(node))
        except ValueError:
            found.append(f"{node.name!r} is not in list")
    return found


class Filter:
    offset = 0


@contextlib.contextmanager
def offset(filter_: Filter, n: int) -> Iterator[None]:
    # sqlparse.utils.offset (and indent), used by AlignedIndentFilter and ReindentFilter
    filter_.offset += n
    yield
    filter_.offset -= n


def case_mutate_argument_after_resume() -> list[int]:
    """sqlparse TestFormatReindentAligned::test_basic, test_group_by, test_group_by_subquery (wrong
    indentation): ``with offset(self, n):`` adds ``n`` to the filter's offset before the yield and
    subtracts it after; after a round trip ``filter_`` is a copy, so the subtraction lands on the copy
    and the real filter's offset keeps growing."""
    f = Filter()
    seen = []
    for n in (3, 5):
        with offset(f, n):
            seen.append(f.offset)
        seen.append(f.offset)
    return seen


CASES: dict[str, Callable[[], Any]] = {
    name[len("case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


def _child(mode: str) -> dict[str, Any]:
    if mode != "native":
        from transpiler import install_import_hook
        install_import_hook(["tests.thirdparty.minimized"],
                            all_generators=True, chaos=(mode == "chaos"))
    import importlib
    module = importlib.import_module("tests.thirdparty.minimized")
    out = {}
    for name in module.CASES:
        try:
            out[name] = repr(module.CASES[name]())
        except BaseException as exc:  # noqa: BLE001 -- a case's exception is its result
            out[name] = f"raised {type(exc).__name__}: {exc}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.thirdparty.minimized", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    results = {}
    for mode in MODES:
        cmd = [args.python, "-m", "tests.thirdparty.minimized", "--child", mode]
        proc = subprocess.run(cmd, check=False, cwd=str(PROJECT_ROOT), env=env, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode:
            print(f"{mode} child failed:\n{proc.stdout}{proc.stderr}")
            return 1
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    differ = 0
    for name in CASES:
        same = len({results[m][name] for m in MODES}) == 1
        differ += not same
        print(f"{name}: {'same in every mode' if same else 'DIFFERS'}")
        for mode in MODES:
            print(f"  {mode:9} {results[mode][name]}")
    print(f"{differ} of {len(CASES)} case(s) differ between modes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
