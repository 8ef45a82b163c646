"""Labels of a durable function's suspension points and structural owners of its statements, stable across edits."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

import libcst as cst
from libcst.metadata import CodeRange

from . import diagnostics as dg
from .canonical import canonical, digest
from .cstutil import SUSPENSIONS, KeepPositions, OwnScope, dotted_name, is_async_comprehension

SEPARATOR = " › "
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_PASS = cst.SimpleStatementSuite([cst.Pass()])
_RENDER = cst.Module([])
_POINT_MODULES = ("runtime", "runtime.points")

Clause = Union[cst.ExceptHandler, cst.ExceptStarHandler, cst.Else, cst.Finally, cst.MatchCase, cst.If]


@dataclass(frozen=True)
class Owner:
    """The structural identity of a statement or clause: compiler locals it makes are named after it."""

    hash: str  # 8 hex digits: the digest of the statement's path
    display: str  # the path in the user's terms, e.g. "for item in items: › try: › except ValueError as e:"


@dataclass(frozen=True)
class PointSpec:
    """The label of one suspension point."""

    key: str  # "@name" for an explicitly named point, else 16 hex digits
    display: str  # e.g. "for item in items: › decision = yield wait('approval')" (or "@approval")
    aliases: tuple[str, ...]  # other keys meaning this point: a named point's default key
    name: str | None  # the explicit name, if any


@dataclass
class Labels:
    """What ``label_function`` finds in one function, keyed by the (line, column) of source nodes."""

    owners: dict[tuple[int, int], Owner] = field(default_factory=dict)
    points: dict[tuple[int, int], PointSpec] = field(default_factory=dict)
    written_out: dict[tuple[tuple[int, int], str], PointSpec] = field(default_factory=dict)
    """The points of the awaits ``async for`` and ``async with`` imply, by (statement position, role)."""
    problems: list[tuple[cst.CSTNode, type[dg.Diagnostic], str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Path:
    hash: str
    display: str

    def child(self, segment: str, occurrence: int, text: str) -> _Path:
        display = f"{self.display}{SEPARATOR}{text}" if self.display else text
        return _Path(digest(self.hash, segment, str(occurrence)), display)


_ROOT = _Path("", "")


# -- finding point() calls ------------------------------------------------------------------------------

def point_call_names(tree: ast.Module) -> frozenset[str]:
    """The dotted names under which the module can reach ``runtime.point``: ``runtime.point``,
    ``point`` after ``from runtime import point``, ``rt.point`` after ``import runtime as rt`` (the
    same for ``runtime.points``)."""
    names = {f"{m}.point" for m in _POINT_MODULES}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(f"{a.asname}.point" for a in node.names if a.name in _POINT_MODULES and a.asname)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            if node.module in _POINT_MODULES:
                names.update(a.asname or a.name for a in node.names if a.name == "point")
            if node.module == "runtime":
                names.update(f"{a.asname or a.name}.point" for a in node.names if a.name == "points")
    return frozenset(names)


def _is_point(node: cst.CSTNode | None, names: frozenset[str]) -> bool:
    return isinstance(node, cst.Call) and dotted_name(node.func) in names


def _operand(node: cst.Yield | cst.Await) -> cst.BaseExpression | None:
    if isinstance(node, cst.Await):
        return node.expression
    return node.value.item if isinstance(node.value, cst.From) else node.value


def _needs_value(node: cst.Yield | cst.Await) -> bool:
    """``point(name, value)`` as the operand of ``yield from`` or ``await`` needs its value (what to
    delegate to, what to await); a plain ``yield`` may leave it out."""
    return isinstance(node, cst.Await) or isinstance(node.value, cst.From)


def _strippable(call: cst.Call, delegates: bool) -> bool:
    """Whether the call has the shape ``point(name[, value])`` (``yield from`` needs the value)."""
    plain = all(a.keyword is None and not a.star for a in call.args)
    return plain and (len(call.args) == 2 if delegates else 1 <= len(call.args) <= 2)


def _literal_name(call: cst.Call) -> str | None:
    arg = call.args[0].value if call.args else None
    if isinstance(arg, cst.SimpleString) and "b" not in arg.prefix.lower():
        value = arg.evaluated_value
        if isinstance(value, str) and _NAME.fullmatch(value):
            return value
    return None


# -- walking one scope -------------------------------------------------------------------------------

class _Yields(OwnScope, cst.CSTVisitor):
    """The yields and awaits of the function's own scope under a node, in the order they finish (inner first):
    nested functions, lambdas and classes are skipped, and of a comprehension only its first iterable
    (evaluated in the enclosing scope) is looked at."""

    def __init__(self) -> None:
        self.found: list[cst.Yield | cst.Await] = []

    def leave_Yield(self, original: cst.Yield) -> None:
        self.found.append(original)

    def leave_Await(self, original: cst.Await) -> None:
        self.found.append(original)

    def _comprehension(self, node: cst.BaseComp | cst.DictComp) -> bool:
        node.for_in.iter.visit(self)
        if is_async_comprehension(node):  # awaited where it stands, after its first iterable
            self.found.append(node)  # type: ignore[arg-type]
        return False

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension  # type: ignore[assignment]


class _Suspending(_Yields):
    """The nodes under which the function's own scope has a yield (by id), found in one walk."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[int] = []
        self.marked: set[int] = set()

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.stack.append(id(node))
        if isinstance(node, SUSPENSIONS) or implied_awaits(node) or is_async_comprehension(node):
            self.marked.update(self.stack)
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        super().on_leave(original_node)
        self.stack.pop()


def implied_awaits(node: cst.CSTNode) -> tuple[str, ...]:
    """The roles of the awaits an ``async for`` (``anext``) or ``async with`` (for each item: ``aenter``,
    ``aexit-error``, ``aexit``, numbered from the second item on) implies; none for other nodes."""
    if isinstance(node, cst.For) and node.asynchronous is not None:
        return ("anext",)
    if isinstance(node, cst.With) and node.asynchronous is not None:
        return tuple(f"{role}{i if i > 1 else ''}" for i in range(1, len(node.items) + 1)
                     for role in ("aenter", "aexit-error", "aexit"))
    return ()


def _yields(*nodes: cst.CSTNode | None) -> list[cst.Yield | cst.Await]:
    finder = _Yields()
    for node in nodes:
        if node is not None:
            node.visit(finder)
    return finder.found


class _Calls(_Yields):
    """Every ``point(...)`` call of the function's own scope, and those that are a yield's operand."""

    def __init__(self, names: frozenset[str]) -> None:
        super().__init__()
        self.names = names
        self.calls: list[cst.Call] = []
        self.direct: dict[cst.Call, cst.Yield | cst.Await] = {}  # call -> the suspension it is the operand of

    def visit_Call(self, node: cst.Call) -> None:
        if _is_point(node, self.names):
            self.calls.append(node)

    def visit_Yield(self, node: cst.Yield) -> None:
        operand = _operand(node)
        if isinstance(operand, cst.Call) and _is_point(operand, self.names):
            self.direct[operand] = node

    visit_Await = visit_Yield  # type: ignore[assignment]

    def _comprehension(self, node: cst.BaseComp | cst.DictComp) -> bool:
        return True  # a point() anywhere in a comprehension is misplaced: look at all of it

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension  # type: ignore[assignment]


class _Stripper(OwnScope, KeepPositions):
    """Replaces ``yield point(n, v)`` by ``yield v`` in the function's own scope; rebuilt nodes get the
    position of the node they replace (when a position table is given)."""

    def __init__(self, names: frozenset[str], positions: dict | None = None) -> None:  # type: ignore[type-arg]
        super().__init__(positions)
        self.names = names

    def leave_Await(self, original: cst.Await, updated: cst.Await) -> cst.Await:
        call = updated.expression
        if not (isinstance(call, cst.Call) and _is_point(call, self.names) and _strippable(call, True)):
            return updated
        value = self._standalone(call.args[1].value)
        ws = updated.whitespace_after_await
        if isinstance(ws, cst.SimpleWhitespace) and not ws.value and not value.lpar:
            ws = cst.SimpleWhitespace(" ")
        return updated.with_changes(expression=value, whitespace_after_await=ws)

    def leave_Yield(self, original: cst.Yield, updated: cst.Yield) -> cst.Yield:
        delegates = isinstance(updated.value, cst.From)
        call = _operand(updated)
        if not (isinstance(call, cst.Call) and _is_point(call, self.names) and _strippable(call, delegates)):
            return updated
        if len(call.args) == 1:
            return updated.with_changes(value=None, whitespace_after_yield=cst.MaybeSentinel.DEFAULT)
        value = self._standalone(call.args[1].value)
        if isinstance(updated.value, cst.From):
            ws = updated.value.whitespace_after_from
            if isinstance(ws, cst.SimpleWhitespace) and not ws.value and not value.lpar:
                ws = cst.SimpleWhitespace(" ")
            return updated.with_changes(value=updated.value.with_changes(item=value, whitespace_after_from=ws))
        ws = updated.whitespace_after_yield
        if isinstance(ws, cst.SimpleWhitespace) and not ws.value and not value.lpar:
            ws = cst.MaybeSentinel.DEFAULT
        return updated.with_changes(value=value, whitespace_after_yield=ws)

    def _standalone(self, value: cst.BaseExpression) -> cst.BaseExpression:
        """The argument, parenthesized when it spans lines (legal in the call's parentheses only)."""
        if value.lpar or "\n" not in _RENDER.code_for_node(value):
            return value
        wrapped = value.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        if self.positions is not None and value in self.positions:
            self.positions[wrapped] = self.positions[value]
        return wrapped


def strip_points(body: Sequence[cst.BaseStatement], positions: dict,  # type: ignore[type-arg]
                 point_names: frozenset[str]) -> list[cst.BaseStatement]:
    """The body with every ``yield point(n, v)`` made ``yield v`` (``yield point(n)``: ``yield``;
    ``yield from point(n, g)``: ``yield from g``); nested scopes are left alone, and every rebuilt node
    gets the position of the node it replaces in ``positions``."""
    if not point_names:
        return list(body)
    stripper = _Stripper(point_names, positions)
    return [s.visit(stripper) for s in body]  # type: ignore[misc]


# -- segments: the canonical text of a statement's header -------------------------------------------

def _units(body: cst.BaseSuite | Sequence[cst.BaseStatement]) -> list[cst.CSTNode]:
    """A block's statements, each small statement of a ``;`` line on its own."""
    if isinstance(body, cst.SimpleStatementSuite):
        return list(body.body)
    statements = body.body if isinstance(body, cst.IndentedBlock) else body
    out: list[cst.CSTNode] = []
    for s in statements:
        out.extend(s.body if isinstance(s, cst.SimpleStatementLine) else [s])  # type: ignore[arg-type]
    return out


def _header_only(node: cst.CSTNode) -> cst.CSTNode:
    """The statement or clause with its body reduced to ``pass`` (what its header alone parses as)."""
    if isinstance(node, (cst.For, cst.While, cst.If)):
        return node.with_changes(body=_PASS, orelse=None, leading_lines=[])
    if isinstance(node, cst.With):
        return node.with_changes(body=_PASS, leading_lines=[])
    if isinstance(node, cst.Match):
        return node.with_changes(cases=[cst.MatchCase(pattern=cst.MatchAs(), body=_PASS)], leading_lines=[])
    if isinstance(node, (cst.ExceptHandler, cst.ExceptStarHandler, cst.MatchCase)):
        return node.with_changes(body=_PASS, leading_lines=[])
    if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
        return node.with_changes(body=_PASS, leading_lines=[], decorators=[])
    if isinstance(node, cst.BaseSmallStatement):
        return node.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
    return node


def _parsed(node: cst.CSTNode) -> ast.AST:
    """The ``ast`` of a statement (or of a clause, parsed inside a statement that can hold it)."""
    wrapped: cst.CSTNode = node
    if isinstance(node, cst.ExceptHandler):
        wrapped = cst.Try(body=_PASS, handlers=[node])
    elif isinstance(node, cst.ExceptStarHandler):
        wrapped = cst.TryStar(body=_PASS, handlers=[node])
    elif isinstance(node, cst.MatchCase):
        wrapped = cst.Match(subject=cst.Name("_"), cases=[node])
    elif isinstance(node, cst.BaseSmallStatement):
        wrapped = cst.SimpleStatementLine([node])
    statement = ast.parse(_RENDER.code_for_node(wrapped)).body[0]
    if isinstance(node, (cst.ExceptHandler, cst.ExceptStarHandler)):
        return statement.handlers[0]  # type: ignore[attr-defined,no-any-return]
    if isinstance(node, cst.MatchCase):
        return statement.cases[0]  # type: ignore[attr-defined,no-any-return]
    return statement


def _blank(node: ast.AST) -> ast.AST:
    for name in ("body", "orelse", "handlers", "finalbody", "cases"):
        if isinstance(getattr(node, name, None), list):
            setattr(node, name, [])
    return node


def _keyword(node: cst.CSTNode) -> str | None:
    """The one word that is the whole header of a ``try`` (also ``try*``), ``else`` or ``finally``."""
    if isinstance(node, (cst.Try, cst.TryStar)):
        return "try"
    if isinstance(node, cst.Else):
        return "else"
    if isinstance(node, cst.Finally):
        return "finally"
    return None


def _segment(node: cst.CSTNode, names: frozenset[str], elif_: bool = False) -> str:
    """The canonical text of the header of a statement or clause, with point(...) calls stripped (so
    that naming a point changes no path)."""
    word = _keyword(node)
    if word is not None:
        return word
    if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
        header = node.with_changes(leading_lines=[])  # a nested scope: all of it is its identity
    else:
        header = _header_only(node)
        if names:
            header = header.visit(_Stripper(names))
    prefix = {cst.ExceptHandler: "except:", cst.ExceptStarHandler: "except*:", cst.MatchCase: "case:"}.get(
        type(node), "elif:" if elif_ else "")
    try:
        return prefix + canonical(_blank(_parsed(header)))
    except SyntaxError:  # syntax this Python cannot parse (except* on 3.10): the code cannot run here anyway
        return f"text:{prefix}" + " ".join(_RENDER.code_for_node(header).split())


# -- display text ----------------------------------------------------------------------------------

_SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER,
                   tokenize.NEWLINE}


def _tidy(code: str, header: bool) -> str:
    """Source text on one line, comments removed, whitespace collapsed; for a header, up to its colon."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError):
        return " ".join(code.split())
    out: list[str] = []
    prev: tokenize.TokenInfo | None = None
    depth = lambdas = 0
    for tok in tokens:
        if tok.type == tokenize.NEWLINE and not header:
            break
        if tok.type in _SKIPPED_TOKENS:
            continue
        if prev is not None:
            if tok.start[0] == prev.end[0]:
                out.append(" " if tok.start[1] > prev.end[1] else "")
            elif prev.string not in ("(", "[", "{") and tok.string not in (")", "]", "}"):
                out.append(" ")
        out.append(" ".join(tok.string.split()) if "\n" in tok.string else tok.string)
        prev = tok
        if tok.type == tokenize.OP:
            if tok.string in ("(", "[", "{"):
                depth += 1
            elif tok.string in (")", "]", "}"):
                depth -= 1
            elif tok.string == ":" and depth == 0 and header:
                if not lambdas:
                    break
                lambdas -= 1
        elif tok.type == tokenize.NAME and tok.string == "lambda" and depth == 0:
            lambdas += 1
    return "".join(out)


def _text(node: cst.CSTNode, elif_: bool = False) -> str:
    """How a statement or clause reads in a label's display."""
    word = _keyword(node)
    if word is not None:
        return word + ":"
    header = _header_only(node)
    if elif_:
        return "el" + _tidy(_RENDER.code_for_node(header), header=True)
    return _tidy(_RENDER.code_for_node(header), header=not isinstance(node, cst.BaseSmallStatement))


# -- labelling ---------------------------------------------------------------------------------------

def _header_parts(node: cst.CSTNode) -> list[cst.CSTNode | None]:
    """The parts of a statement or clause that its own yields can be in (not its body)."""
    if isinstance(node, cst.For):
        return [node.target, node.iter]
    if isinstance(node, (cst.While, cst.If)):
        return [node.test]
    if isinstance(node, cst.With):
        return list(node.items)
    if isinstance(node, cst.Match):
        return [node.subject]
    if isinstance(node, (cst.ExceptHandler, cst.ExceptStarHandler)):
        return [node.type]
    if isinstance(node, cst.MatchCase):
        return [node.pattern, node.guard]
    if isinstance(node, cst.BaseSmallStatement):
        return [node]
    return []  # try, else, finally; nested definitions (their defaults are not points of this function)


def _clauses(node: cst.CSTNode) -> list[tuple[Clause, bool]]:
    """A compound statement's clauses, each with whether it is an ``elif``; an ``elif`` chain is flat,
    so every ``elif`` and the final ``else`` are clauses of the first ``if``."""
    out: list[tuple[Clause, bool]] = []
    if isinstance(node, cst.If):
        rest = node.orelse
        while isinstance(rest, cst.If):
            out.append((rest, True))
            rest = rest.orelse
        if rest is not None:
            out.append((rest, False))
    elif isinstance(node, (cst.For, cst.While)) and node.orelse is not None:
        out.append((node.orelse, False))
    elif isinstance(node, (cst.Try, cst.TryStar)):
        out += [(h, False) for h in node.handlers]
        out += [(c, False) for c in (node.orelse, node.finalbody) if c is not None]
    elif isinstance(node, cst.Match):
        out += [(c, False) for c in node.cases]
    return out


class _Labeler:
    def __init__(self, positions: Mapping[cst.CSTNode, CodeRange], names: frozenset[str],
                 suspending: set[int]) -> None:
        self.positions = positions
        self.names = names
        self.labels = Labels()
        self.suspending = suspending  # ids of the nodes that hold a yield of the function's own scope

    def at(self, node: cst.CSTNode) -> tuple[int, int] | None:
        pos = self.positions.get(node)
        return (pos.start.line, pos.start.column) if pos is not None else None

    def block(self, units: Sequence[cst.CSTNode], parent: _Path) -> None:
        """Label the statements of one block (or the clauses of one statement), siblings in order."""
        seen: Counter[tuple[str, bool]] = Counter()
        for node in units:
            # A statement without a yield owns no point and no local a snapshot keeps, and is not counted
            # among its siblings that suspend: it needs no label (its compiler locals, if a suspending
            # finally around it makes any, are named after the statement around it).
            if id(node) in self.suspending:
                self.unit(node, parent, seen, False)

    def unit(self, node: cst.CSTNode, parent: _Path, seen: Counter[tuple[str, bool]], elif_: bool) -> None:
        own = _yields(*_header_parts(node))
        # an elif's own part is its test and body: the clauses after it belong to the first if
        parts = (node.test, node.body) if elif_ else (node,)  # type: ignore[attr-defined]
        suspends = any(id(part) in self.suspending for part in parts)
        segment = _segment(node, self.names, elif_)
        seen[segment, suspends] += 1
        path = parent.child(segment, seen[segment, suspends], _text(node, elif_))
        where = self.at(node)
        if where is not None:
            self.labels.owners[where] = Owner(path.hash[:8], path.display)
        for index, y in enumerate(own, 1):
            self.point(y, path, index)
        if where is not None:
            for role in implied_awaits(node):
                self.labels.written_out[where, role] = PointSpec(digest(path.hash, role), f"{path.display} [{role}]",
                                                                 (), None)
        body = getattr(node, "body", None)
        if isinstance(body, cst.BaseSuite) and not isinstance(node, (cst.FunctionDef, cst.ClassDef)):
            self.block(_units(body), path)
        if not elif_:
            self.clauses(_clauses(node), path)

    def clauses(self, clauses: list[tuple[Clause, bool]], parent: _Path) -> None:
        seen: Counter[tuple[str, bool]] = Counter()
        for clause, elif_ in clauses:
            self.unit(clause, parent, seen, elif_)

    def point(self, node: cst.Yield | cst.Await | cst.BaseComp, path: _Path, index: int) -> None:
        where = self.at(node)
        if where is None:
            return
        # an await (an async comprehension is one) hashes a token of its own: a def <-> async def change
        # never matches a point
        token = "yield" if isinstance(node, cst.Yield) else "await"
        key = digest(path.hash, token, str(index))
        display = path.display + (f" [{token} {index}]" if index > 1 else "")
        call = _operand(node) if isinstance(node, (cst.Yield, cst.Await)) else None
        name = None
        if isinstance(call, cst.Call) and _is_point(call, self.names):
            name = _literal_name(call) if _strippable(call, _needs_value(node)) else None  # type: ignore[arg-type]
        if name is None:
            self.labels.points[where] = PointSpec(key, display, (), None)
        else:
            self.labels.points[where] = PointSpec(f"@{name}", f"@{name}", (key,), name)

    def check(self, body: cst.BaseSuite) -> None:
        """DG008 for a point() call that is malformed or not a yield's operand; DG009 for a name used twice."""
        finder = _Calls(self.names)
        body.visit(finder)
        used: set[str] = set()
        problems = self.labels.problems
        for call in finder.calls:
            if call not in finder.direct:
                problems.append((call, dg.BadPoint, "point() must be the operand of 'yield', 'yield from' or 'await'"))
            elif not _strippable(call, _needs_value(finder.direct[call])):
                suspension = finder.direct[call]
                need = ("a name and an awaitable" if isinstance(suspension, cst.Await) else
                        "a name and a generator" if _needs_value(suspension) else "a name and an optional value")
                problems.append((call, dg.BadPoint, f"point() takes {need}, as positional arguments"))
            elif (name := _literal_name(call)) is None:
                problems.append((call.args[0].value, dg.BadPoint,
                                 "the name must be a string literal of 1 to 100 letters, digits or '_.:-'"))
            elif name in used:
                problems.append((call, dg.DuplicatePoint, name))
            else:
                used.add(name)


def label_function(fn: cst.FunctionDef, positions: Mapping[cst.CSTNode, CodeRange],
                   point_names: frozenset[str]) -> Labels:
    """The owners and point labels of one durable function, computed on its original code, and the
    problems with its ``point(...)`` calls."""
    finder = _Suspending()
    fn.body.visit(finder)
    labeler = _Labeler(positions, point_names, finder.marked)
    if point_names:
        labeler.check(fn.body)
    labeler.block(_units(fn.body), _ROOT)
    return labeler.labels
