"""Lowering of statements around suspension points into the canonical form the emitter expects.

After this pass, inside a durable function:
- every suspension is a canonical line ``_dg_s = K; [name =] yield v`` or ``... yield from _dg_yfN``;
- a ``for`` loop that suspends iterates over a named iterator local;
- a ``with`` that suspends is expanded (PEP 343) with its manager in a named local;
- an ``except`` handler that suspends binds its exception to a named local;
- a ``finally`` keeps its pending completion (exception, return value, break/continue) in named
  locals when it suspends, and is skipped when the generator is detached.
Statements without suspensions are left exactly as written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import libcst as cst

from . import desugar_async
from .cstutil import (PREFIX, SUSPENSIONS, assign, block, body_of, call, expr, has_suspension, if_, paren, releasing,
                      rt, small)
from .lower_expr import ExprLowerer, Stmts, Unsupported, read_now
from .genexps import ITER
from .genexps import ITERATOR as GENEXP_ITERATOR
from .names import describe

# Handlers that let the detach signal through may run while the interpreter shuts down, when module
# globals (``_dg_rt`` too) are already None: they use these locals, bound when the body starts.
DETACHED_CLASS = PREFIX + "D"
DETACHING = PREFIX + "dt"
RUNTIME_LOCALS = (DETACHED_CLASS, DETACHING)

# The owner of compiler locals made outside any statement with a structural identity.
ROOT_OWNER = "00000000"

# Pending completion kinds kept in ``_dg_fkN`` while a finally block runs.
NORMAL, EXCEPTION, RETURN, BREAK, CONTINUE, DETACHED = range(6)


@dataclass
class TryInfo:
    """What the restore emitter must know about a lowered ``try`` statement."""

    handler_excs: list[str | None] = field(default_factory=list)  # temp bound by each handler, if it suspends
    finally_kind: str | None = None          # local holding the pending completion kind
    finally_exc: str | None = None
    finally_value: str | None = None
    finally_kinds: set[int] = field(default_factory=set)
    with_manager: str | None = None           # for an expanded ``with``: manager and exit locals
    with_exit: str | None = None
    with_async: bool = False                  # the expanded statement is an ``async with``
    star_raised: list[str] = field(default_factory=list)  # except*: what each handler raised


@dataclass
class _Capture:
    """An enclosing finally that suspends: exits that cross it record their completion."""

    kind: str
    value: str
    loop_depth: int
    info: TryInfo


class StmtLowerer:
    """Lowers one durable function body. Dispatches on statement type to ``lower_<Type>``."""

    def __init__(self, line_of: Callable[[cst.CSTNode], int],
                 owner_of: Callable[[cst.CSTNode], str | None] = lambda node: None,
                 suspension: str = "yield") -> None:
        self.counter = 0
        self.suspension = suspension
        """What suspends this function, ``yield`` or ``await``, as its compiler locals' descriptions say."""
        self.line_of = line_of
        self.owner_of = owner_of
        self.owners: list[str] = []  # structural identity of the statements being lowered, innermost last
        self.ordinals: dict[tuple[str, str], int] = {}
        self.legacy: dict[str, str] = {}
        """The name each compiler local had before names were structural (one counter per function),
        for snapshots written then."""
        self.exprs = ExprLowerer(self.new_temp, self._line_of)
        self.try_info: dict[int, TryInfo] = {}
        self.captures: list[_Capture] = []
        self.loop_depth = 0
        self.needs_loop: set[int] = set()
        self.lines: list[int] = []  # the source lines of the statements being lowered, innermost last
        self.made: dict[str, str] = {}
        """What each local the lowering made holds, in the user's terms (``names.describe``)."""
        self.async_withs: dict[int, desugar_async.AsyncWith] = {}
        """The ``try`` statements written out for ``async with`` (by id), with their manager and exit locals."""
        self.async_with_items: dict[int, tuple[cst.With, int]] = {}
        """The inner statements a multi-item ``async with`` is split into: the statement and the item number."""

    def new_temp(self, kind: str, text: str = "", line: int = 0, at: cst.CSTNode | None = None) -> str:
        """A new compiler local of ``kind`` for the construct at ``line`` (default: the statement
        being lowered); ``text`` is the source of the expression it keeps, if any.

        Its name is structural, ``_dg_<kind><n>_<owner>``: the owner is the identity of the statement
        (or of the clause ``at``) that made it, and n counts the locals of that kind it made. Editing
        another statement renames nothing, so a snapshot's compiler locals mean the same in new code."""
        self.counter += 1
        owner = (self.owner_of(at) if at is not None else None) or self._owner()
        ordinal = self.ordinals[owner, kind] = self.ordinals.get((owner, kind), 0) + 1
        name = f"{PREFIX}{kind}{ordinal}_{owner}"
        self.legacy[name] = f"{PREFIX}{kind}{self.counter}"
        self.made[name] = self.made.get(text) or describe(kind, line or (self.lines[-1] if self.lines else 0), text,
                                                              self.suspension)
        return name

    # -- blocks ----------------------------------------------------------------------------
    def lower_body(self, stmts: list[cst.BaseStatement]) -> Stmts:
        out: Stmts = []
        for s in stmts:
            out += self.lower_stmt(s)
        return out

    def lower_suite(self, suite: cst.BaseSuite) -> Stmts:
        return self.lower_body(body_of(suite))

    def lower_stmt(self, node: cst.BaseStatement) -> Stmts:
        if not has_suspension(node) and not self.captures:
            return [node]
        method = getattr(self, "lower_" + type(node).__name__, None)
        if method is None:
            raise Unsupported(node, type(node).__name__)
        self.lines.append(self.line_of(node) or (self.lines[-1] if self.lines else 0))
        self.owners.append(self.owner_of(node) or self._owner())
        try:
            return method(node)
        finally:
            self.lines.pop()
            self.owners.pop()

    def _line_of(self, node: cst.CSTNode) -> int:
        """The source line of a node; for one the lowering wrote itself, that of the statement being lowered."""
        return self.line_of(node) or (self.lines[-1] if self.lines else 0)

    def _owner(self) -> str:
        return self.owners[-1] if self.owners else ROOT_OWNER

    # -- simple statements -----------------------------------------------------------------
    def lower_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> Stmts:
        out: Stmts = []
        for part in node.body:
            if not has_suspension(part) and not isinstance(part, (cst.Return, cst.Break, cst.Continue)):
                out.append(node.with_changes(body=[_strip_semicolon(part)]) if len(node.body) > 1 else node)
                continue
            method = getattr(self, "small_" + type(part).__name__, None)
            if method is None:
                raise Unsupported(part, type(part).__name__)
            self.owners.append(self.owner_of(part) or self._owner())
            try:
                out += method(part)
            finally:
                self.owners.pop()
        return out

    def small_Expr(self, node: cst.Expr) -> Stmts:
        if isinstance(node.value, SUSPENSIONS):
            return self.exprs.suspend_stmt(node.value, None)
        pre, value = self.exprs.lower(node.value)
        return pre + [small(cst.Expr(value=value))]

    def small_Assign(self, node: cst.Assign) -> Stmts:
        target = node.targets[0].target
        if len(node.targets) == 1 and isinstance(target, cst.Name) and isinstance(node.value, SUSPENSIONS):
            return self.exprs.suspend_stmt(node.value, target.value)
        if isinstance(node.value, SUSPENSIONS):
            temp = self.new_temp("a" if isinstance(node.value, cst.Await) else "y")
            pre = self.exprs.suspend_stmt(node.value, temp)
            value: cst.BaseExpression = cst.Name(temp)
        else:
            pre, value = self.exprs.lower(node.value)
        if not any(has_suspension(t.target) for t in node.targets):
            return pre + [small(cst.Assign(targets=node.targets, value=value))]
        value = self.exprs.capture(value, pre)
        for t in node.targets:
            pre += self.store(t.target, value)
        return pre

    def store(self, target: cst.BaseAssignTargetExpression, value: cst.BaseExpression) -> Stmts:
        """``target = value`` where the target's own sub-expressions may suspend."""
        if isinstance(target, cst.Attribute):
            pre, obj = self.exprs.lower(target.value)
            return pre + [assign(target.with_changes(value=obj), value)]
        if isinstance(target, cst.Subscript):
            pre, lowered = self.exprs.lower(target)
            assert isinstance(lowered, cst.Subscript)
            return pre + [assign(lowered, value)]
        if isinstance(target, (cst.Tuple, cst.List)) and has_suspension(target):
            # Unpack into temporaries first (CPython unpacks before assigning), then assign the
            # targets left to right, each evaluating its own sub-expressions when reached.
            temps = [self.new_temp("u") for _ in target.elements]
            unpack = cst.Tuple(elements=[
                cst.StarredElement(value=cst.Name(t)) if isinstance(e, cst.StarredElement) else cst.Element(cst.Name(t))
                for t, e in zip(temps, target.elements)], lpar=[], rpar=[])
            out: Stmts = [assign(unpack, value)]
            for t, e in zip(temps, target.elements):
                out += self.store(e.value, cst.Name(t))  # type: ignore[arg-type]
            return out
        return [assign(target, value)]

    def small_AnnAssign(self, node: cst.AnnAssign) -> Stmts:
        if node.value is None or has_suspension(node.target) or has_suspension(node.annotation):
            raise Unsupported(node, "suspension inside an annotation")
        pre, value = self.exprs.lower(node.value)
        return pre + [small(node.with_changes(value=value))]

    def small_AugAssign(self, node: cst.AugAssign) -> Stmts:
        target = node.target
        plain = isinstance(target, cst.Name) and target.value in self.exprs.plain_locals
        if plain and isinstance(node.value, cst.Await):  # ``total += await e`` stays one statement
            return [read_now(target)] + self.exprs.suspend_stmt(node.value, target.value,  # type: ignore[arg-type]
                                                               node.operator)
        pre: Stmts = []
        if isinstance(target, cst.Name):
            current = self.exprs.capture(target, pre)
            store_target: cst.BaseAssignTargetExpression = target
        elif isinstance(target, cst.Attribute):
            obj_pre, obj = self.exprs.lower(target.value)
            pre += obj_pre
            obj = self.exprs.capture(obj, pre)
            store_target = target.with_changes(value=obj)
            current = self.exprs.capture(store_target, pre)
        elif isinstance(target, cst.Subscript):
            sub_pre, lowered = self.exprs.lower(target)
            pre += sub_pre
            assert isinstance(lowered, cst.Subscript)
            obj = self.exprs.capture(lowered.value, pre)
            elements = []
            for element in lowered.slice:
                s = element.slice
                if isinstance(s, cst.Index):
                    elements.append(element.with_changes(slice=s.with_changes(value=self.exprs.capture(s.value, pre))))
                else:
                    assert isinstance(s, cst.Slice)
                    elements.append(element.with_changes(slice=s.with_changes(
                        lower=self.exprs.capture(s.lower, pre) if s.lower is not None else None,
                        upper=self.exprs.capture(s.upper, pre) if s.upper is not None else None,
                        step=self.exprs.capture(s.step, pre) if s.step is not None else None)))
            store_target = lowered.with_changes(value=obj, slice=elements)
            current = self.exprs.capture(store_target, pre)
        else:
            raise Unsupported(node, "augmented assignment target")
        value_pre, value = self.exprs.lower(node.value)
        pre += value_pre
        assert isinstance(current, cst.Name)
        pre.append(small(cst.AugAssign(target=current, operator=node.operator, value=value)))
        if current is not target:  # (a plain local is updated in place: ``ExprLowerer.plain_locals``)
            pre.append(assign(store_target, current))
        return pre

    def small_Return(self, node: cst.Return) -> Stmts:
        pre, value = self.exprs.lower(node.value) if node.value is not None else ([], None)
        crossing = self.captures
        if not crossing:
            return pre + [small(node.with_changes(value=value))]
        # Record the pending return in every suspending finally it passes through.
        holder = crossing[-1].value
        pre.append(assign(holder, value if value is not None else cst.Name("None")))
        for cap in crossing:
            if cap.value != holder:
                pre.append(assign(cap.value, cst.Name(holder)))
            pre.append(assign(cap.kind, cst.Integer(str(RETURN))))
            cap.info.finally_kinds.add(RETURN)
        pre.append(small(cst.Return(value=cst.Name(holder))))
        return pre

    def _loop_exit(self, node: cst.BaseSmallStatement, kind: int) -> Stmts:
        out: Stmts = []
        for cap in self.captures:
            if cap.loop_depth == self.loop_depth:
                out.append(assign(cap.kind, cst.Integer(str(kind))))
                cap.info.finally_kinds.add(kind)
        out.append(small(node))
        return out

    def small_Break(self, node: cst.Break) -> Stmts:
        return self._loop_exit(node, BREAK)

    def small_Continue(self, node: cst.Continue) -> Stmts:
        return self._loop_exit(node, CONTINUE)

    def small_Raise(self, node: cst.Raise) -> Stmts:
        items = [x for x in (node.exc, node.cause.item if node.cause else None) if x is not None]
        pre, lowered = self.exprs.sequence(items)
        exc = lowered[0] if node.exc is not None else None
        cause = node.cause.with_changes(item=lowered[-1]) if node.cause else None
        return pre + [small(node.with_changes(exc=exc, cause=cause))]

    def small_Assert(self, node: cst.Assert) -> Stmts:
        pre, test = self.exprs.lower(node.test)
        msg_pre, msg = self.exprs.lower(node.msg) if node.msg is not None else ([], None)
        fail = msg_pre + [small(cst.Assert(test=cst.Name("False"), msg=msg))]
        check = if_(cst.UnaryOperation(operator=cst.Not(), expression=paren(test)), fail)
        return [if_(cst.Name("__debug__"), pre + [check])]

    def small_Del(self, node: cst.Del) -> Stmts:
        targets = node.target.elements if isinstance(node.target, cst.Tuple) and not node.target.lpar else [node.target]
        out: Stmts = []
        for t in targets:
            target = t.value if isinstance(t, cst.Element) else t
            pre, lowered = self.exprs.lower(target)
            out += pre + [small(cst.Del(target=lowered))]
        return out

    # -- compound statements ---------------------------------------------------------------
    def lower_If(self, node: cst.If) -> Stmts:
        pre, test = self.exprs.lower(node.test)
        orelse: Stmts | None = None
        if isinstance(node.orelse, cst.If):
            orelse = self.lower_stmt(node.orelse)
        elif isinstance(node.orelse, cst.Else):
            orelse = self.lower_suite(node.orelse.body)
        body = self.lower_suite(node.body)
        return pre + [if_(test, body, orelse)]

    def _loop_body(self, suite: cst.BaseSuite, extra: Stmts | None = None) -> Stmts:
        self.loop_depth += 1
        try:
            return (extra or []) + self.lower_suite(suite)
        finally:
            self.loop_depth -= 1

    def lower_While(self, node: cst.While) -> Stmts:
        if not has_suspension(node.test):
            orelse = self.lower_suite(node.orelse.body) if node.orelse else None
            return [cst.While(test=node.test, body=block(self._loop_body(node.body)),
                              orelse=cst.Else(body=block(orelse)) if orelse is not None else None)]
        pre, test = self.exprs.lower(node.test)
        if node.orelse is None:
            check = if_(cst.UnaryOperation(operator=cst.Not(), expression=paren(test)),
                        [small(cst.Break())])
            return [cst.While(test=cst.Name("True"), body=block(self._loop_body(node.body, pre + [check])))]
        flag = self.new_temp("we")
        check = if_(cst.UnaryOperation(operator=cst.Not(), expression=paren(test)),
                    [assign(flag, cst.Name("True")), small(cst.Break())])
        loop = cst.While(test=cst.Name("True"), body=block(self._loop_body(node.body, pre + [check])))
        return [assign(flag, cst.Name("False")), loop, if_(cst.Name(flag), self.lower_suite(node.orelse.body))]

    def lower_For(self, node: cst.For) -> Stmts:
        if node.asynchronous is not None:
            return self._async_for(node)
        pre, iterable = self.exprs.lower(node.iter)
        orelse = self.lower_suite(node.orelse.body) if node.orelse else None
        body_yields = has_suspension(node.body) or has_suspension(node.target)
        target = node.target
        extra: Stmts = []
        if has_suspension(target):
            value = self.new_temp("v")
            extra = self.store(target, cst.Name(value))
            target = cst.Name(value)
        if body_yields and isinstance(iterable, cst.Name) and iterable.value == GENEXP_ITERATOR:
            it = iterable.value  # a generator expression's outermost iterator: iter() was called on it already
        elif body_yields:
            it = self.new_temp("it")
            pre.append(assign(it, call(cst.Name(ITER), iterable)))  # builtins.iter, whatever `iter` names here
            iterable = cst.Name(it)
        loop = cst.For(target=target, iter=iterable, body=block(self._loop_body(node.body, extra)),
                       orelse=cst.Else(body=block(orelse)) if orelse is not None else None)
        if body_yields and it != GENEXP_ITERATOR:  # a generator expression's body ends with its loop
            return pre + [releasing([loop], it)]
        return pre + [loop]

    def lower_With(self, node: cst.With) -> Stmts:
        if node.asynchronous is not None:
            return self._async_with(node)
        if len(node.items) > 1:
            inner = node.with_changes(items=node.items[1:], lpar=cst.MaybeSentinel.DEFAULT, rpar=cst.MaybeSentinel.DEFAULT)
            first = node.items[0].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            outer = node.with_changes(items=[first], body=block([inner]), lpar=cst.MaybeSentinel.DEFAULT,
                                      rpar=cst.MaybeSentinel.DEFAULT)
            return self.lower_With(outer)
        item = node.items[0]
        pre, manager = self.exprs.lower(item.item)
        if not has_suspension(node.body) and not self.captures:
            return pre + [node.with_changes(items=[item.with_changes(item=manager, comma=cst.MaybeSentinel.DEFAULT)])]
        if not has_suspension(node.body):
            body = self.lower_suite(node.body)
            return pre + [node.with_changes(items=[item.with_changes(item=manager, comma=cst.MaybeSentinel.DEFAULT)],
                                            body=block(body))]
        mgr, exit_, value, ok = (self.new_temp(k) for k in ("wm", "wx", "wv", "wok"))
        pre.append(assign(mgr, manager))
        pre.append(small(cst.Assign(
            targets=[cst.AssignTarget(target=cst.Tuple(elements=[cst.Element(cst.Name(exit_)), cst.Element(cst.Name(value))],
                                                       lpar=[], rpar=[]))],
            value=call(rt("with_enter"), cst.Name(mgr)))))
        pre.append(assign(ok, cst.Name("True")))
        body: Stmts = []
        if item.asname is not None:
            body += self.store(item.asname.name, cst.Name(value))  # type: ignore[arg-type]
        body += self.lower_suite(node.body)
        exc = PREFIX + "t"
        handler = cst.ExceptHandler(
            type=cst.Name("BaseException"),
            name=cst.AsName(name=cst.Name(exc)),
            body=block([
                assign(ok, cst.Name("False")),
                if_(expr(f"{DETACHING}({exc}) or not {exit_}(type({exc}), {exc}, {exc}.__traceback__)"),
                    [small(cst.Raise())]),
            ]))
        final = cst.Finally(body=block([
            if_(cst.Name(ok), [small(cst.Expr(expr(f"{exit_}(None, None, None)")))]),
            assign(cst.Tuple([cst.Element(cst.Name(mgr)), cst.Element(cst.Name(exit_))], lpar=[], rpar=[]),
                   expr("None, None")),
        ]))
        try_node = cst.Try(body=block(body), handlers=[handler], finalbody=final)
        self.try_info[id(try_node)] = TryInfo(handler_excs=[None], with_manager=mgr, with_exit=exit_)
        return pre + [try_node]

    def _async_for(self, node: cst.For) -> Stmts:
        iterator = self.new_temp("ai")
        ran_out = self.new_temp("ae") if node.orelse is not None else None
        item = "" if isinstance(node.target, cst.Name) else self.new_temp("v")
        out: Stmts = []
        for statement in desugar_async.async_for(node, iterator, ran_out, item, self.exprs.synthetic):
            out += self.lower_stmt(statement)
        return [releasing(out, iterator)]

    def _async_with(self, node: cst.With) -> Stmts:
        origin, position = self.async_with_items.pop(id(node), (node, 1))
        item, *rest = node.items
        body = node.body
        if rest:  # async with a, b: body  ==  async with a: async with b: body
            inner = node.with_changes(items=rest, lpar=cst.MaybeSentinel.DEFAULT, rpar=cst.MaybeSentinel.DEFAULT)
            self.async_with_items[id(inner)] = (origin, position + 1)
            body = block([inner])
        names = desugar_async.AsyncWith(self.new_temp("am"), self.new_temp("ax"))
        statements = desugar_async.async_with(
            body, item.with_changes(comma=cst.MaybeSentinel.DEFAULT), names, self.new_temp("av"), self.new_temp("aok"),
            self.exprs.synthetic, origin, position)
        self.async_withs[id(statements[-1])] = names
        out: Stmts = []
        for statement in statements:
            out += self.lower_stmt(statement)
        return out

    def lower_Try(self, node: cst.Try) -> Stmts:
        return self._lower_try(node, star=False)

    def lower_TryStar(self, node: cst.TryStar) -> Stmts:
        return self._lower_try(node, star=True)

    def _lower_try(self, node: cst.Try | cst.TryStar, star: bool) -> Stmts:
        suspends = has_suspension(node)
        if not suspends:
            # Only exits crossing an enclosing suspending finally need rewriting.
            return [self._rewrite_parts(node)]
        final = node.finalbody
        final_yields = final is not None and has_suspension(final.body)
        info = TryInfo()
        written_out = self.async_withs.pop(id(node), None)
        if written_out is not None:  # an async with: a restore inside it looks its __aexit__ up again
            info.with_manager, info.with_exit, info.with_async = written_out.manager, written_out.exit, True
        capture: _Capture | None = None
        if final is not None:
            info.finally_kind = self.new_temp("fk")
            if final_yields:
                info.finally_exc = self.new_temp("fx")
                info.finally_value = self.new_temp("fv")
                capture = _Capture(info.finally_kind, info.finally_value, self.loop_depth, info)
                self.captures.append(capture)
        try:
            inner: Stmts = self._lower_handlers(node, star) if node.handlers else self.lower_suite(node.body)
        finally:
            if capture is not None:
                self.captures.pop()
        if final is None:
            return inner
        kind = info.finally_kind
        assert kind is not None
        t = PREFIX + "t"
        handler_body = [
            assign(kind, expr(f"{DETACHED} if {DETACHING}({t}) else {EXCEPTION}")),
            small(cst.Raise()),
        ]
        if final_yields:
            handler_body.insert(0, assign(info.finally_exc, cst.Name(t)))  # type: ignore[arg-type]
        catch = cst.ExceptHandler(type=cst.Name("BaseException"), name=cst.AsName(name=cst.Name(t)),
                                  body=block(handler_body))
        final_body = self.lower_suite(final.body)
        guarded: Stmts = [if_(cst.Comparison(left=cst.Name(kind), comparisons=[
            cst.ComparisonTarget(operator=cst.NotEqual(), comparator=cst.Integer(str(DETACHED)))]), final_body)]
        if info.finally_exc:
            guarded = [releasing(guarded, info.finally_exc)]
        outer = cst.Try(body=block(inner), handlers=[catch], finalbody=cst.Finally(body=block(guarded)))
        self.try_info[id(outer)] = info
        return [assign(kind, cst.Integer(str(NORMAL))), outer]

    def _lower_handlers(self, node: cst.Try | cst.TryStar, star: bool) -> Stmts:
        info = TryInfo()
        handlers: list[cst.BaseExceptHandler] = []
        if not star:
            handlers.append(cst.ExceptHandler(type=cst.Name(DETACHED_CLASS), body=block([small(cst.Raise())])))
            info.handler_excs.append(None)
        # except*: restore re-raises the whole group that entered the clauses; the earlier handlers
        # take their parts again (their bodies are skipped) and the suspended one gets its own part.
        group = self.new_temp("g") if star and any(has_suspension(h.body) for h in node.handlers) else None
        for h in node.handlers:
            if has_suspension(h.type):
                raise Unsupported(h, "suspension inside an except clause's type")
            body = self.lower_suite(h.body)
            if star:
                body.insert(0, if_(expr(f"{PREFIX}rt.detaching_now()"), [small(cst.Raise())]))
            if group is not None:
                # What each handler raised joins the group re-raised after all handlers: keep it, so
                # restoring into a later handler can raise it again from its (skipped) handler.
                raised = self.new_temp("x", line=self.line_of(h), at=h)
                info.star_raised.append(raised)
                t = PREFIX + "t"
                body = [cst.Try(body=block(body), handlers=[cst.ExceptHandler(
                    type=cst.Name("BaseException"), name=cst.AsName(name=cst.Name(t)),
                    body=block([assign(raised, cst.Name(t)), small(cst.Raise())]))])]
            if has_suspension(h.body):
                exc = self.new_temp("e", line=self.line_of(h), at=h)
                info.handler_excs.append(group or exc)
                if h.name is not None:
                    user = h.name.name
                    assert isinstance(user, cst.Name)
                    # ``except E as e`` deletes e when the handler ends, however it ends.
                    body = [assign(user.value, cst.Name(exc)),
                            cst.Try(body=block(body), finalbody=cst.Finally(body=block(
                                [assign(user.value, cst.Name("None")), small(cst.Del(target=cst.Name(user.value)))])))]
                handlers.append(h.with_changes(type=h.type or cst.Name("BaseException"),
                                               whitespace_after_except=cst.SimpleWhitespace(" "),
                                               name=cst.AsName(name=cst.Name(exc)), body=block(body)))
            else:
                info.handler_excs.append(None)
                handlers.append(h.with_changes(body=block(body)))
        orelse = cst.Else(body=block(self.lower_suite(node.orelse.body))) if node.orelse else None
        body = self.lower_suite(node.body)
        if group is not None:
            t = PREFIX + "t"
            body = [cst.Try(body=block(body), handlers=[cst.ExceptHandler(
                type=cst.Name("BaseException"), name=cst.AsName(name=cst.Name(t)),
                body=block([assign(group, cst.Name(t)), small(cst.Raise())]))])]
        cls = cst.TryStar if star else cst.Try
        inner = cls(body=block(body), handlers=handlers, orelse=orelse)  # type: ignore[arg-type]
        self.try_info[id(inner)] = info
        return [assign(x, cst.Name("None")) for x in info.star_raised] + [inner]

    def _rewrite_parts(self, node: cst.Try | cst.TryStar) -> cst.BaseStatement:
        return node.with_changes(
            body=block(self.lower_suite(node.body)),
            handlers=[h.with_changes(body=block(self.lower_suite(h.body))) for h in node.handlers],
            orelse=node.orelse.with_changes(body=block(self.lower_suite(node.orelse.body))) if node.orelse else None,
            finalbody=node.finalbody.with_changes(body=block(self.lower_suite(node.finalbody.body)))
            if node.finalbody else None)

    def lower_Match(self, node: cst.Match) -> Stmts:
        pre, subject = self.exprs.lower(node.subject)
        if not any(has_suspension(c.guard) or has_suspension(c.pattern) for c in node.cases):
            if not any(has_suspension(c.body) for c in node.cases) and not self.captures:
                return pre + [node.with_changes(subject=subject)]
            # Case bodies that suspend run outside the match, selected by the case number.
            chosen = self.new_temp("mc")
            cases = [c.with_changes(body=block([assign(chosen, cst.Integer(str(i + 1)))]))
                     for i, c in enumerate(node.cases)]
            out = pre + [assign(chosen, cst.Integer("0")), node.with_changes(subject=subject, cases=cases)]
            return out + self._case_bodies(node, chosen)
        subject = self.exprs.capture(subject, pre)
        chosen = self.new_temp("mc")
        out = pre + [assign(chosen, cst.Integer("0"))]
        for i, case in enumerate(node.cases):
            if has_suspension(case.pattern):
                raise Unsupported(case, "suspension inside a case pattern")
            mark = [assign(chosen, cst.Integer(str(i + 1)))]
            if case.guard is not None and has_suspension(case.guard):
                guard_pre, guard = self.exprs.lower(case.guard)
                body = guard_pre + [if_(guard, mark)]
                case_node = case.with_changes(guard=None, whitespace_before_if=cst.SimpleWhitespace(""),
                                              whitespace_after_if=cst.SimpleWhitespace(""), body=block(body))
            else:
                case_node = case.with_changes(body=block(mark))
            match = node.with_changes(subject=subject, cases=[case_node])
            out.append(if_(cst.UnaryOperation(operator=cst.Not(), expression=cst.Name(chosen)), [match]))
        return out + self._case_bodies(node, chosen)

    def _case_bodies(self, node: cst.Match, chosen: str) -> Stmts:
        chain: cst.If | None = None
        for i in reversed(range(len(node.cases))):
            test = cst.Comparison(left=cst.Name(chosen), comparisons=[
                cst.ComparisonTarget(operator=cst.Equal(), comparator=cst.Integer(str(i + 1)))])
            chain = cst.If(test=test, body=block(self.lower_suite(node.cases[i].body)), orelse=chain)
        return [chain] if chain is not None else []

    def lower_FunctionDef(self, node: cst.FunctionDef) -> Stmts:
        return [node]

    def lower_ClassDef(self, node: cst.ClassDef) -> Stmts:
        return [node]


def _strip_semicolon(node: cst.BaseSmallStatement) -> cst.BaseSmallStatement:
    return node.with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
