"""``async for`` and ``async with`` written out as explicit awaits (PEP 492), for the statement lowering.

The result is ordinary statements (a ``while`` loop with a ``try``; a ``try``/``except``/``finally``) whose
awaits are then lowered like any other: each becomes a suspension point, and the existing machinery for
loops, handlers that suspend and finally blocks that suspend keeps CPython's behaviour, detach included.
The awaits written here have no place in the source: ``synthetic`` says, for each, which statement they
belong to and their role in it (``anext``, ``aenter``, ``aexit``, ``aexit-error``), which names their points.
"""
from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from .cstutil import PREFIX, assign, block, call, expr, if_, rt, small
from .genexps import ITERATOR as COMPREHENSION_ITERATOR


@dataclass(frozen=True)
class Synthetic:
    """An await the desugaring wrote: the ``async`` statement it belongs to and its role there."""

    statement: cst.CSTNode
    role: str


@dataclass(frozen=True)
class AsyncWith:
    """The locals of a written-out ``async with``, for the restore of a suspension inside it."""

    manager: str
    exit: str


def _await(value: cst.BaseExpression, statement: cst.CSTNode, role: str,
           synthetic: dict[int, Synthetic]) -> cst.Await:
    node = cst.Await(expression=value)
    synthetic[id(node)] = Synthetic(statement, role)
    return node


def async_for(node: cst.For, iterator: str, ran_out: str | None, item_temp: str,
              synthetic: dict[int, Synthetic]) -> list[cst.BaseStatement]:
    """``async for t in it: body [else: other]`` as::

        it_ = aiter_of(it)
        ran_out = False                    # only with an else clause
        while True:
            try:
                t = await anext_of(it_)    # (a target that is not a name gets the item from a temporary)
            except StopAsyncIteration:
                ran_out = True
                break
            body
        if ran_out: other
    """
    target = node.target
    item = target if isinstance(target, cst.Name) else cst.Name(item_temp)
    step = _await(call(rt("anext_of"), cst.Name(iterator)), node, "anext", synthetic)
    stop: list[cst.BaseStatement] = [small(cst.Break())]
    if ran_out is not None:
        stop.insert(0, assign(ran_out, cst.Name("True")))
    fetch = cst.Try(body=block([assign(item, step)]), handlers=[
        cst.ExceptHandler(type=cst.Name("StopAsyncIteration"), body=block(stop))])
    body: list[cst.BaseStatement] = [fetch]
    if item is not target:
        body.append(assign(target, item))  # type: ignore[arg-type]
    body += _statements(node.body)
    # a written-out comprehension's loop gets the iterator its caller made (as natively, __aiter__ runs once)
    start = node.iter if isinstance(node.iter, cst.Name) and node.iter.value == COMPREHENSION_ITERATOR \
        else call(rt("aiter_of"), node.iter)
    out: list[cst.BaseStatement] = [assign(iterator, start)]
    if ran_out is not None:
        out.append(assign(ran_out, cst.Name("False")))
    out.append(cst.While(test=cst.Name("True"), body=block(body)))
    if ran_out is not None and node.orelse is not None:
        out.append(if_(cst.Name(ran_out), _statements(node.orelse.body)))
    return out


def async_with(body: cst.BaseSuite, item: cst.WithItem, names: AsyncWith, value: str, ok: str,
               synthetic: dict[int, Synthetic], origin: cst.With, position: int) -> list[cst.BaseStatement]:
    """Item ``position`` of the statement ``origin``, ``async with m as v: body`` (the items after it
    nest inside ``body``), as::

        mgr = m
        value = await async_with_enter(mgr)
        exit_ = async_exit_of(mgr)
        ok = True
        try:
            v = value
            body
        except BaseException as t:
            ok = False
            if not await exit_(type(t), t, t.__traceback__):
                raise
        finally:
            if ok:
                await exit_(None, None, None)
            mgr = exit_ = None

    ``async_with_enter`` checks both methods and calls ``__aenter__``; the exit is bound after the await, so
    that a restore at that await binds it too (bound methods are never saved: a restore inside the
    statement looks ``__aexit__`` up again). A detach passes the handler (the lowering puts
    ``except Detached: raise`` first) and skips the finally block, as it skips every finally block of a
    suspended frame: no ``__aexit__`` runs."""
    manager, exit_ = names.manager, names.exit
    suffix = str(position) if position > 1 else ""
    t = PREFIX + "t"
    inside: list[cst.BaseStatement] = []
    if item.asname is not None:
        inside.append(assign(item.asname.name, cst.Name(value)))  # type: ignore[arg-type]
    inside += _statements(body)
    failed = _await(call(cst.Name(exit_), call(cst.Name("type"), cst.Name(t)), cst.Name(t), expr(f"{t}.__traceback__")),
                    origin, "aexit-error" + suffix, synthetic)
    handler = cst.ExceptHandler(type=cst.Name("BaseException"), name=cst.AsName(name=cst.Name(t)), body=block([
        assign(ok, cst.Name("False")),
        if_(cst.UnaryOperation(operator=cst.Not(), expression=failed), [small(cst.Raise())]),
    ]))
    left = _await(call(cst.Name(exit_), cst.Name("None"), cst.Name("None"), cst.Name("None")), origin, "aexit" + suffix,
                  synthetic)
    final = cst.Finally(body=block([
        if_(cst.Name(ok), [small(cst.Expr(left))]),
        assign(cst.Tuple([cst.Element(cst.Name(manager)), cst.Element(cst.Name(exit_))], lpar=[], rpar=[]),
               expr("None, None")),
    ]))
    enter = _await(call(rt("async_with_enter"), cst.Name(manager)), origin, "aenter" + suffix, synthetic)
    return [
        assign(manager, item.item),
        assign(value, enter),
        assign(exit_, call(rt("async_exit_of"), cst.Name(manager))),
        assign(ok, cst.Name("True")),
        cst.Try(body=block(inside), handlers=[handler], finalbody=final),
    ]


def _statements(suite: cst.BaseSuite) -> list[cst.BaseStatement]:
    if isinstance(suite, cst.IndentedBlock):
        return list(suite.body)
    return [cst.SimpleStatementLine(body=list(suite.body))]  # type: ignore[attr-defined]
