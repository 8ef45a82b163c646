"""Emission: numbers the suspension points and builds the fast body and the restore body.

The fast body is the lowered code as is (plus ``_dg_s = K`` before each suspension): a normal call
runs native Python with no dispatch. The restore body is the same code with guards: while
``_dg_r`` (the target state) is non-zero, every statement that does not lead to the target is
skipped, loop and ``if`` headers are not re-evaluated, saved exceptions and pending completions are
re-created inside their ``try`` so the real handlers and ``finally`` blocks take them, and at the
target the generator yields the runtime's marker (a coroutine awaits it). Once ``_dg_r`` is zero the guards all pass and
the restore body behaves exactly like the fast body.
"""
from __future__ import annotations

from typing import Callable, Iterator

import libcst as cst

from .cstutil import PREFIX, RESTORE, STATE, assign, block, body_of, call, expr, if_, paren, rt, small
from .lower_expr import Stmts
from .lower_stmt import BREAK, CONTINUE, EXCEPTION, RETURN, TryInfo

_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def _children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    for child in node.children:
        if not isinstance(child, _SCOPES):
            yield child


class Emitter:
    def __init__(self, lowered: Stmts, yield_lines: dict[int, int], try_info: dict[int, TryInfo],
                 await_slots: dict[int, str] | None = None) -> None:
        self.lowered = lowered
        self.yield_lines = yield_lines
        self.await_slots = await_slots or {}
        self.try_info = try_info
        self.state_of: dict[int, int] = {}
        self.lines: dict[int, int] = {}
        self._ranges: dict[int, tuple[int, int] | None] = {}
        self.needs: dict[int, set[str]] = {}
        self.delegating: dict[int, bool] = {}
        """Of each state: whether its frame delegates (``yield from``, ``await``), so a snapshot goes on
        into the delegate."""
        self.temp = 0
        for s in lowered:
            self._number(s)

    # -- numbering -------------------------------------------------------------------------
    def _number(self, node: cst.CSTNode) -> None:
        if id(node) in self.yield_lines:
            k = len(self.state_of) + 1
            self.state_of[id(node)] = k
            self.lines[k] = self.yield_lines[id(node)]
            assert isinstance(node, cst.SimpleStatementLine)
            suspension = _suspension_of(node)
            self.delegating[k] = isinstance(suspension, cst.Await) or isinstance(suspension.value, cst.From)
            return
        for child in _children(node):
            self._number(child)

    def range_of(self, node: cst.CSTNode) -> tuple[int, int] | None:
        key = id(node)
        if key not in self._ranges:
            if key in self.state_of:
                k = self.state_of[key]
                self._ranges[key] = (k, k)
            else:
                spans = [r for r in (self.range_of(c) for c in _children(node)) if r is not None]
                self._ranges[key] = (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None
        return self._ranges[key]

    def _range_block(self, stmts: list[cst.BaseStatement]) -> tuple[int, int] | None:
        spans = [r for r in (self.range_of(s) for s in stmts) if r is not None]
        return (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None

    def _need(self, span: tuple[int, int] | None, *names: str | None) -> None:
        if span is None:
            return
        for k in range(span[0], span[1] + 1):
            self.needs.setdefault(k, set()).update(n for n in names if n)

    # -- fast body -------------------------------------------------------------------------
    def fast(self) -> Stmts:
        return [self._fast(s) for s in self.lowered]  # type: ignore[misc]

    def fast_final(self) -> Stmts:
        """The fast body as emitted: a loop whose only suspension is state K sets ``_dg_s = K``
        once before the loop instead of on every iteration (no other suspension can change it)."""
        out: Stmts = []
        for s in self.lowered:
            out += self._hoist(s)
        return out

    def _hoist(self, node: cst.BaseStatement) -> Stmts:
        span = self.range_of(node)
        if isinstance(node, (cst.For, cst.While)) and span is not None and span[0] == span[1]:
            return [assign(STATE, cst.Integer(str(span[0]))), _strip_states(node, self.state_of)]
        if span is None or id(node) in self.state_of:
            return [self._fast(node)]
        # Rebuild compound statements so loops nested inside them are hoisted too.
        return [_map_blocks(node, self._hoist)]  # type: ignore[list-item]

    def _fast(self, node: cst.BaseStatement) -> cst.BaseStatement:
        numbering = self

        class Number(cst.CSTTransformer):
            def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine,
                                          updated: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
                k = numbering.state_of.get(id(original))
                if k is None:
                    return updated
                return _numbered(updated, k)

        return node.visit(Number())  # type: ignore[return-value]

    # -- restore body ----------------------------------------------------------------------
    def restore(self) -> Stmts:
        return self.r_block(self.lowered)

    def r_block(self, stmts: list[cst.BaseStatement]) -> Stmts:
        out: Stmts = []
        chunk: Stmts = []
        for s in stmts:
            span = self.range_of(s)
            if span is None:
                chunk.append(s)
                continue
            if chunk:
                out.append(if_(expr(f"not {RESTORE}"), chunk))
                chunk = []
            out += self.r_stmt(s, span)
        if chunk:
            out.append(if_(expr(f"not {RESTORE}"), chunk))
        return out

    def _in(self, span: tuple[int, int] | None) -> cst.BaseExpression:
        if span is None:
            return cst.Name("False")
        a, b = span
        return expr(f"{RESTORE} == {a}" if a == b else f"{a} <= {RESTORE} <= {b}")

    def _when_normal(self, normal: cst.BaseExpression, restoring: cst.BaseExpression) -> cst.BaseExpression:
        """``(normal if not _dg_r else restoring)``: the header is evaluated only in normal mode."""
        return cst.IfExp(test=expr(f"not {RESTORE}"), body=paren(normal), orelse=paren(restoring),
                         lpar=[cst.LeftParen()], rpar=[cst.RightParen()])

    def r_stmt(self, s: cst.BaseStatement, span: tuple[int, int]) -> Stmts:
        if id(s) in self.state_of:
            return self.r_suspend(s, self.state_of[id(s)])  # type: ignore[arg-type]
        method = getattr(self, "r_" + type(s).__name__)
        return method(s, span)

    def r_suspend(self, line: cst.SimpleStatementLine, k: int) -> Stmts:
        y = _suspension_of(line)
        resume: Stmts = [assign(RESTORE, cst.Integer("0")), assign(STATE, cst.Integer(str(k)))]
        if isinstance(y, cst.Await):
            # a durable delegate comes back not started (the await starts it, and it yields the marker
            # itself); any other saved delegate is answered by a helper that yields the marker first
            slot = self.await_slots[id(line)]
            self._need((k, k), slot)
            again: cst.BaseExpression = cst.Await(expression=call(rt("resume_await"), cst.Name(slot)))
        elif isinstance(y.value, cst.From):
            # the delegate comes back (a durable one started, at its own marker); ``through`` yields the
            # marker for any other iterator, then passes the caller's operations on to it
            sub = y.value.item
            assert isinstance(sub, cst.Name)
            through = cst.Name(f"{PREFIX}m")
            resume.append(small(cst.Assign(
                targets=[cst.AssignTarget(cst.Tuple([cst.Element(sub), cst.Element(through)], lpar=[], rpar=[]))],
                value=call(rt("resume_delegation"), sub))))
            again = cst.Yield(value=cst.From(item=through))
        else:
            again = cst.Yield(value=rt("MARKER"))
        resume.append(small(line.body[1].with_changes(value=again)))  # (the same statement: Expr, Assign, AugAssign)
        return [cst.If(test=expr(f"{RESTORE} == {k}"), body=block(resume),
                       orelse=cst.If(test=expr(f"not {RESTORE}"), body=block([_numbered(line, k)])))]

    def r_If(self, s: cst.If, span: tuple[int, int]) -> Stmts:
        body = body_of(s.body)
        test = self._when_normal(s.test, self._in(self._range_block(body)))
        orelse: cst.If | cst.Else | None = None
        if isinstance(s.orelse, cst.Else):
            orelse = cst.Else(body=block(self.r_block(body_of(s.orelse.body))))
        elif isinstance(s.orelse, cst.If):
            # (an ``elif`` chain: a match's case bodies) an ``elif`` with no suspension is skipped while
            # restoring like any other such statement: its test may read what was not saved (the
            # match's case number when the target is after the match)
            orelse = cst.Else(body=block(self.r_block([s.orelse])))
        return [cst.If(test=test, body=block(self.r_block(body)), orelse=orelse)]

    def r_While(self, s: cst.While, span: tuple[int, int]) -> Stmts:
        body = body_of(s.body)
        test = self._when_normal(s.test, self._in(self._range_block(body)))
        orelse = cst.Else(body=block(self.r_block(body_of(s.orelse.body)))) if s.orelse else None
        return [cst.While(test=test, body=block(self.r_block(body)), orelse=orelse)]

    def r_For(self, s: cst.For, span: tuple[int, int]) -> Stmts:
        body = body_of(s.body)
        body_span = self._range_block(body)
        orelse = cst.Else(body=block(self.r_block(body_of(s.orelse.body)))) if s.orelse else None
        if body_span is None:
            return [cst.For(target=s.target, iter=self._when_normal(s.iter, cst.Tuple([])),
                            body=block([self._fast(b) for b in body]), orelse=orelse)]
        if isinstance(s.iter, cst.Name):
            self._need(body_span, s.iter.value)
        self.temp += 1
        value = f"{PREFIX}rv{self.temp}"
        resumed = cst.IfExp(test=self._in(body_span), body=call(rt("resume_first"), s.iter), orelse=cst.Tuple([]))
        bind = if_(expr(f"{value} is not {PREFIX}rt.SKIP"), [small(cst.Assign([cst.AssignTarget(s.target)], cst.Name(value)))])
        return [cst.For(target=cst.Name(value), iter=self._when_normal(s.iter, resumed),
                        body=block([bind] + self.r_block(body)), orelse=orelse)]

    def r_Try(self, s: cst.Try, span: tuple[int, int]) -> Stmts:
        info = self.try_info.get(id(s), TryInfo())
        dispatch: Stmts = []
        handlers = []
        for index, h in enumerate(s.handlers):
            h_span = self._range_block(body_of(h.body))
            exc = info.handler_excs[index] if index < len(info.handler_excs) else None
            typ = h.type if h.type is not None else cst.Name("BaseException")
            if h_span is not None and exc is not None:
                dispatch.append(if_(self._in(h_span), [_reraise(exc)]))
                self._need(h_span, exc)
                if not isinstance(s, cst.TryStar):
                    typ = self._when_normal(typ, cst.IfExp(test=self._in(h_span), body=cst.Name("BaseException"),
                                                           orelse=cst.Tuple([])))
            elif not isinstance(s, cst.TryStar):
                typ = self._when_normal(typ, cst.Tuple([]))
            h_body = [_RECONTEXT] + self.r_block(body_of(h.body))
            if info.star_raised:
                raised = info.star_raised[index]
                h_body.insert(0, if_(expr(f"{RESTORE} and {raised} is not None"), [_reraise(raised)]))
                self._need(span, *info.star_raised)
            handlers.append(h.with_changes(type=typ, body=block(h_body),
                                           whitespace_after_except=cst.SimpleWhitespace(" ")))
        final = s.finalbody
        if final is not None and info.finally_exc is not None:
            f_span = self._range_block(body_of(final.body))
            if f_span is not None:
                kind = info.finally_kind
                recreate: Stmts = [if_(expr(f"{kind} == {EXCEPTION}"), [_reraise(info.finally_exc)])]
                if RETURN in info.finally_kinds:
                    recreate.append(if_(expr(f"{kind} == {RETURN}"), [small(cst.Return(cst.Name(info.finally_value)))]))  # type: ignore[arg-type]
                if BREAK in info.finally_kinds:
                    recreate.append(if_(expr(f"{kind} == {BREAK}"), [small(cst.Break())]))
                if CONTINUE in info.finally_kinds:
                    recreate.append(if_(expr(f"{kind} == {CONTINUE}"), [small(cst.Continue())]))
                dispatch.append(if_(self._in(f_span), recreate))
                self._need(f_span, kind, info.finally_exc, info.finally_value)
        if info.with_manager is not None:
            body_span = self._range_block(body_of(s.body))
            dispatch.insert(0, if_(self._in(body_span), [
                assign(info.with_exit, call(rt("async_with_exit" if info.with_async else "with_exit"),  # type: ignore[arg-type]
                                            cst.Name(info.with_manager)))]))
            self._need(body_span, info.with_manager)
        body = dispatch + self.r_block(body_of(s.body))
        orelse = s.orelse.with_changes(body=block(self.r_block(body_of(s.orelse.body)))) if s.orelse else None
        finalbody = final.with_changes(body=block([_RECONTEXT] + self.r_block(body_of(final.body)))) if final else None
        return [s.with_changes(body=block(body), handlers=handlers, orelse=orelse, finalbody=finalbody)]

    r_TryStar = r_Try

    def r_Match(self, s: cst.Match, span: tuple[int, int]) -> Stmts:
        chain: cst.If | cst.Else = cst.Else(body=block([s.with_changes(
            cases=[c.with_changes(body=block(self.r_block(body_of(c.body)))) for c in s.cases])]))
        for c in reversed(s.cases):
            c_span = self._range_block(body_of(c.body))
            if c_span is not None:
                chain = cst.If(test=self._in(c_span), body=block(self.r_block(body_of(c.body))), orelse=chain)
        assert isinstance(chain, cst.If)
        return [chain]


def _reraise(name: str) -> cst.SimpleStatementLine:
    """Raise a saved exception again; the runtime notes its ``__context__``, which raising inside
    another handler would overwrite, and ``_RECONTEXT`` in the handler that takes it puts it back."""
    return small(cst.Raise(exc=call(rt("reraise"), cst.Name(name))))


_RECONTEXT = if_(cst.Name(RESTORE), [small(cst.Expr(call(rt("recontext"))))])


def _suspension_of(line: cst.SimpleStatementLine) -> cst.Yield | cst.Await:
    second = line.body[1]
    value = second.value  # type: ignore[attr-defined]
    assert isinstance(value, (cst.Yield, cst.Await))
    return value


def _numbered(line: cst.SimpleStatementLine, k: int) -> cst.SimpleStatementLine:
    first = line.body[0]
    assert isinstance(first, cst.Assign)
    return line.with_changes(body=[first.with_changes(value=cst.Integer(str(k))), *line.body[1:]])


def _strip_states(node: cst.CSTNode, state_of: dict[int, int]) -> cst.CSTNode:
    class Strip(cst.CSTTransformer):
        def visit_FunctionDef(self, n: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, n: cst.ClassDef) -> bool:
            return False

        def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine,
                                      updated: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
            if id(original) in state_of:
                return updated.with_changes(body=list(updated.body[1:]))
            return updated

    return node.visit(Strip())


def _map_blocks(node: cst.CSTNode, hoist: Callable[[cst.BaseStatement], Stmts]) -> cst.CSTNode:
    """Apply ``hoist`` to the statements of every block directly inside ``node``."""
    class Blocks(cst.CSTTransformer):
        def on_visit(self, n: cst.CSTNode) -> bool:
            if isinstance(n, cst.IndentedBlock):
                return False
            return not isinstance(n, (cst.FunctionDef, cst.ClassDef))

        def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.IndentedBlock:
            body: list[cst.BaseStatement] = []
            for stmt in original.body:
                body += hoist(stmt)
            return updated.with_changes(body=body)

    return node.visit(Blocks())
