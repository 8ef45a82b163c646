"""Scope and liveness analysis of a lowered durable function: which locals each suspension keeps.

Works on the ``ast`` of the lowered fast body. The analysis is structured (no CFG): loops iterate
to a fixpoint, and any statement inside a ``try`` may jump to its handlers and ``finally``, so the
variables live there are treated as live throughout the protected block. It errs on the side of
keeping a variable: a dead local is only dropped when no path can read it again.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from .cstutil import DYNAMIC_NAMES, STATE



_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_SCOPES = (*_FUNCTIONS, ast.ClassDef, *_COMPREHENSIONS)


def _scope_children(node: ast.AST) -> list[ast.AST]:
    """Child nodes evaluated in this scope (nested function bodies and comprehensions excluded)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [*node.decorator_list, *_arg_defaults(node.args), *_annotations(node.args),
                *(node.returns and [node.returns] or [])]
    if isinstance(node, ast.Lambda):
        return list(_arg_defaults(node.args))
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *node.keywords]
    if isinstance(node, _COMPREHENSIONS):
        return [node.generators[0].iter]
    return list(ast.iter_child_nodes(node))


def _arg_defaults(args: ast.arguments) -> list[ast.expr]:
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


def _params(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *filter(None, [args.vararg]), *args.kwonlyargs,
            *filter(None, [args.kwarg])]


def _annotations(args: ast.arguments) -> list[ast.expr]:
    return [a.annotation for a in _params(args) if a.annotation is not None]


def _bound_by(node: ast.AST) -> set[str]:
    """Names a statement-level node binds in the scope it runs in (other than by ``Name`` stores)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.ExceptHandler) and node.name:
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
        return {node.name}
    if isinstance(node, ast.MatchMapping) and node.rest:
        return {node.rest}
    return set()


@dataclass
class _ScopeNames:
    reads: set[str] = field(default_factory=set)
    binds: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)


def _scope_names(nodes: list[ast.AST]) -> _ScopeNames:
    """What code of one scope reads and binds; a nested scope counts as a read of its free names
    (and a comprehension as a binding of its walrus targets, PEP 572)."""
    found = _ScopeNames()
    todo = list(nodes)
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Name):
            (found.reads if isinstance(n.ctx, ast.Load) else found.binds).add(n.id)
            continue
        if isinstance(n, ast.Global):
            found.globals.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            found.nonlocals.update(n.names)
        found.binds |= _bound_by(n)
        if isinstance(n, _SCOPES):
            found.reads |= _free_names(n)
            if isinstance(n, _COMPREHENSIONS):
                found.binds |= _walrus_targets(n)
            todo.extend(_scope_children(n))
            continue
        todo.extend(ast.iter_child_nodes(n))
    return found


def _free_names(node: ast.AST) -> set[str]:
    """Names a nested scope reads from the scopes around it (may refer to our locals through cells):
    not its parameters, a comprehension's targets, nor what it binds itself."""
    if isinstance(node, _FUNCTIONS):
        body = node.body if isinstance(node.body, list) else [node.body]
        names = _scope_names(list(body))
        own = (names.binds | {a.arg for a in _params(node.args)}) - names.nonlocals
        return (names.reads - own - names.globals) | names.nonlocals
    if isinstance(node, _COMPREHENSIONS):
        first, *rest = node.generators
        parts: list[ast.AST] = [*first.ifs, *rest]
        parts += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        names = _scope_names(parts)
        targets = {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        return (names.reads | names.nonlocals) - targets
    # a class body: every name it mentions (reads there may fall back to our cells)
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _walrus_targets(node: ast.AST) -> set[str]:
    """Names the walrus operators of a comprehension (and of comprehensions nested in it) bind in
    the enclosing function's scope (PEP 572); a lambda's walrus binds in the lambda."""
    found: set[str] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
            found.add(n.target.id)
        todo.extend(c for c in ast.iter_child_nodes(n) if not isinstance(c, (*_FUNCTIONS, ast.ClassDef)))
    return found


@dataclass
class Effects:
    uses: set[str] = field(default_factory=set)
    kills: set[str] = field(default_factory=set)
    maybe_defs: set[str] = field(default_factory=set)


def effects(node: ast.AST) -> Effects:
    """Reads and definite writes of an expression or simple statement (in evaluation order terms)."""
    eff = Effects()

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.Name):
            if isinstance(n.ctx, ast.Load):
                eff.uses.add(n.id)
            elif isinstance(n.ctx, ast.Del):
                eff.uses.add(n.id)
                eff.kills.add(n.id)
            else:
                eff.kills.add(n.id)
            return
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            eff.kills.add(n.name)
        if isinstance(n, _SCOPES):
            eff.uses |= _free_names(n)
            if isinstance(n, _COMPREHENSIONS):
                eff.maybe_defs |= _walrus_targets(n)
            for child in _scope_children(n):
                visit(child)
            return
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                eff.kills.add((alias.asname or alias.name).split(".")[0])
            return
        if isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            eff.uses.add(n.target.id)
        for child in _scope_children(n):
            visit(child)

    visit(node)
    eff.kills -= eff.maybe_defs
    return eff


def local_names(func: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[list[str], set[str]]:
    """(parameters in order, all other names bound in the function's own scope)."""
    params = [a.arg for a in _params(func.args)]
    names = _scope_names(list(func.body))
    return params, names.binds - names.globals - names.nonlocals - set(params)


@dataclass
class _Ctx:
    exc: frozenset[str] = frozenset()        # live at the nearest handler/finally entry
    brk: frozenset[str] = frozenset()
    cont: frozenset[str] = frozenset()
    ret: frozenset[str] = frozenset()        # live at enclosing finally blocks a return passes through


class Liveness:
    """Computes, for each canonical suspension ``_dg_s = K; ...``, the locals live while suspended."""

    def __init__(self, func: ast.FunctionDef | ast.AsyncFunctionDef, locals_: set[str]) -> None:
        self.locals = locals_
        self.at_state: dict[int, set[str]] = {}
        self.dynamic = any(isinstance(n, ast.Name) and n.id in DYNAMIC_NAMES for n in ast.walk(func))
        self.cells = set()
        # Variables captured by closures that can outlive the statement creating them are kept
        # live everywhere (list/set/dict comprehensions run to completion on the spot).
        for n in ast.walk(func):
            if n is not func and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
                                                ast.GeneratorExp)):
                self.cells |= _free_names(n) & locals_
        self.func = func

    def run(self) -> dict[int, set[str]]:
        # Loops make the result depend on itself; two passes over the whole body settle it.
        for _ in range(2):
            self.block(self.func.body, frozenset(), _Ctx())
        always = self.cells
        if self.dynamic:
            always = set(self.locals)
        # What the code after each point may read, without the captured variables kept live everywhere
        # (a point's contract: what new code needs from a snapshot of old code)
        self.strict = {k: set(v & self.locals) | (always if self.dynamic else set()) for k, v in self.at_state.items()}
        return {k: (v | always) & self.locals for k, v in self.at_state.items()}

    def block(self, stmts: list[ast.stmt], live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        for i in range(len(stmts) - 1, -1, -1):
            state = _state_of(stmts[i - 1]) if i > 0 else None
            if state is not None:
                self.record(state, stmts[i], live, ctx)
            live = self.stmt(stmts[i], live, ctx)
        return live

    def simple(self, node: ast.AST, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        eff = effects(node)
        return frozenset((live - eff.kills) | eff.uses | ctx.exc)

    def stmt(self, s: ast.stmt, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        method = getattr(self, "s_" + type(s).__name__, None)
        if method is None:
            return self.simple(s, live, ctx)
        return method(s, live, ctx)

    def record(self, state: int, nxt: ast.stmt, live: frozenset[str], ctx: _Ctx) -> None:
        """``nxt`` is the yield statement after ``_dg_s = K``; ``live`` is live after it resumes."""
        after = set(live)
        if isinstance(nxt, ast.Assign):
            after -= {t.id for t in nxt.targets if isinstance(t, ast.Name)}
            value = nxt.value
        elif isinstance(nxt, ast.AugAssign):  # ``total += await e``: the target is read again on resume
            assert isinstance(nxt.target, ast.Name)
            after.add(nxt.target.id)
            value = nxt.value
        elif isinstance(nxt, ast.Expr):
            value = nxt.value
        else:
            value = None
        if isinstance(value, ast.YieldFrom) and isinstance(value.value, ast.Name):
            after.add(value.value.id)
        after |= ctx.exc
        self.at_state[state] = self.at_state.get(state, set()) | after

    def s_Return(self, s: ast.Return, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        return self.simple(s, ctx.ret, ctx)

    def s_Raise(self, s: ast.Raise, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        return self.simple(s, frozenset(), ctx)

    def s_Break(self, s: ast.Break, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        return ctx.brk | ctx.exc

    def s_Continue(self, s: ast.Continue, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        return ctx.cont | ctx.exc

    def s_If(self, s: ast.If, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        body = self.block(s.body, live, ctx)
        orelse = self.block(s.orelse, live, ctx)
        return self.simple(s.test, body | orelse, ctx)

    def s_While(self, s: ast.While, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        after = self.block(s.orelse, live, ctx)
        head = frozenset(self.simple(s.test, after, ctx))
        for _ in range(3):
            inner = _Ctx(ctx.exc, live, head, ctx.ret)
            body = self.block(s.body, head, inner)
            new_head = self.simple(s.test, body | after, ctx)
            if new_head == head:
                break
            head = new_head
        return head

    def s_For(self, s: ast.For, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        after = self.block(s.orelse, live, ctx)
        head = after
        target = effects(s.target)
        for _ in range(3):
            inner = _Ctx(ctx.exc, live, head, ctx.ret)
            body = self.block(s.body, head, inner)
            new_head = frozenset(((body - target.kills) | target.uses) | after | ctx.exc)
            if new_head == head:
                break
            head = new_head
        return self.simple(s.iter, head, ctx)

    def s_With(self, s: ast.With, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        # __exit__ may suppress an exception raised in the body: execution then goes on after it.
        inner = _Ctx(ctx.exc | live, ctx.brk, ctx.cont, ctx.ret)
        body = self.block(s.body, live, inner)
        for item in reversed(s.items):
            if item.optional_vars is not None:
                body = self.simple(item.optional_vars, body, ctx)
            body = self.simple(item.context_expr, body, ctx)
        return body

    def s_Try(self, s: ast.Try, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        if s.finalbody:
            # The finally block runs on every way out; what is live after it depends on which.
            def through(out: frozenset[str]) -> frozenset[str]:
                return self.block(s.finalbody, out, ctx)
            inner = _Ctx(through(ctx.exc), through(ctx.brk), through(ctx.cont), through(ctx.ret))
            after = through(live)
        else:
            inner = ctx
            after = live
        handlers = frozenset()
        for h in s.handlers:
            h_live = self.block(h.body, after, inner)
            if h.name:
                h_live = h_live - {h.name}
            if h.type is not None:
                h_live = self.simple(h.type, h_live, inner)
            handlers |= h_live
        orelse = self.block(s.orelse, after, inner)
        body_ctx = _Ctx(inner.exc | handlers, inner.brk, inner.cont, inner.ret)
        return self.block(s.body, orelse, body_ctx) | handlers

    s_TryStar = s_Try

    def s_Match(self, s: ast.Match, live: frozenset[str], ctx: _Ctx) -> frozenset[str]:
        total = live
        for case in s.cases:
            body = self.block(case.body, live, ctx)
            if case.guard is not None:
                body = self.simple(case.guard, body, ctx)
            total |= self.simple(case.pattern, body, ctx)
        return self.simple(s.subject, total, ctx)


def _state_of(s: ast.stmt) -> int | None:
    if (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
            and s.targets[0].id == STATE and isinstance(s.value, ast.Constant)):
        return int(s.value.value)
    return None


def analyze(func_source: str) -> tuple[list[str], set[str], dict[int, set[str]]]:
    """Parameters, other locals, and live locals per state for a rendered lowered function."""
    params, others, live, _ = analyze_strict(func_source)
    return params, others, live


def analyze_strict(func_source: str) -> tuple[list[str], set[str], dict[int, set[str]], dict[int, set[str]]]:
    """``analyze``, and the locals each state's code may read (``Liveness.strict``)."""
    tree = ast.parse(func_source)
    func = tree.body[0]
    assert isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
    params, others = local_names(func)
    liveness = Liveness(func, set(params) | others)
    live = liveness.run()
    strict = liveness.strict
    if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "super" for n in ast.walk(func)):
        first = set(params[:1])
        live = {k: v | first for k, v in live.items()}
        strict = {k: v | first for k, v in strict.items()}
    return params, others, live, strict
