"""Lowering of expressions that contain suspensions: hoists every yield and await into a canonical statement.

Everything evaluated before a suspension is captured in a temporary first, in CPython's evaluation
order, so that the remaining expression evaluated after the resume sees the same values.
"""
from __future__ import annotations

from typing import Callable, Sequence

import libcst as cst

from .cstutil import PREFIX, STATE, assign, code_of, has_suspension, if_, releasing, small
from .desugar_async import Synthetic

Stmts = list[cst.BaseStatement]


class Unsupported(Exception):
    """A construct the compiler rejects; carries the node for the diagnostic position."""

    def __init__(self, node: cst.CSTNode, kind: str) -> None:
        super().__init__(kind)
        self.node = node
        self.kind = kind

_NEVER_REBOUND = (PREFIX + "genexpr", PREFIX + "iter")

_CONSTANTS = (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.Ellipsis)


def is_constant(node: cst.BaseExpression) -> bool:
    if isinstance(node, _CONSTANTS):
        return True
    if isinstance(node, cst.Name) and node.value in ("None", "True", "False"):
        return True
    if isinstance(node, cst.ConcatenatedString):
        return is_constant(node.left) and is_constant(node.right)  # type: ignore[arg-type]
    return False


class ExprLowerer:
    """Turns an expression into (statements, suspension-free expression) with identical evaluation order."""

    def __init__(self, new_temp: Callable[..., str], line_of: Callable[[cst.CSTNode], int]) -> None:
        self.new_temp = new_temp
        self.line_of = line_of
        self.yield_lines: dict[int, int] = {}
        """Original source line of each canonical yield line, keyed by ``id`` of the statement node."""
        self.yield_nodes: dict[int, cst.Yield | cst.Await] = {}
        """The source's yield or await each canonical line suspends at (its position names the point)."""
        self.await_slots: dict[int, str] = {}
        """Of each canonical await line: the slot that holds the awaited object in snapshots."""
        self.plain_locals: frozenset[str] = frozenset()
        """Locals nothing but the function's own code rebinds (``generate.plain_locals``; only for
        coroutines): read after an await, they have the value they had before it."""
        self.synthetic: dict[int, Synthetic] = {}
        """The awaits that ``async for`` and ``async with`` were written out with (by id), and their roles."""

    # -- canonical suspension statements ---------------------------------------------------
    def suspend_stmt(self, node: cst.Yield | cst.Await, target: str | None,
                     operator: cst.BaseAugOp | None = None) -> Stmts:
        """Canonical form: ``_dg_s = K; [target =] yield v`` (or ``await e``) on one line (K numbered
        later), after the statements that evaluate the operand; ``target op= await e`` with an ``operator``
        (for a plain local only: the restore arm reads it again)."""
        if isinstance(node, cst.Await):
            return self._await_stmt(node, target, operator)
        pre: Stmts = []
        value = node.value
        if isinstance(value, cst.From):
            inner_pre, item = self.lower(value.item)
            pre += inner_pre
            it = self.new_temp("yf", line=self.line_of(node))
            pre.append(assign(it, cst.Call(func=cst.Attribute(value=cst.Name(PREFIX + "rt"), attr=cst.Name("yf_iter")),
                                            args=[cst.Arg(value=item)])))
            ynode: cst.Yield = cst.Yield(value=cst.From(item=cst.Name(it)))
        elif value is not None:
            inner_pre, v = self.lower(value)
            pre += inner_pre
            ynode = cst.Yield(value=v)
        else:
            ynode = cst.Yield()
        line = self._canonical(node, ynode, target)
        if isinstance(value, cst.From):
            pre.append(releasing([line], it))
        else:
            pre.append(line)
        return pre

    def _await_stmt(self, node: cst.Await, target: str | None, operator: cst.BaseAugOp | None) -> Stmts:
        """The awaited object is not kept in a local: a snapshot reads it from the coroutine's
        ``cr_await``, and the restore body binds it to the point's slot (``await_slots``)."""
        pre, awaited = self.lower(node.expression)
        line = self._canonical(node, cst.Await(expression=awaited), target, operator)
        self.await_slots[id(line)] = self.new_temp("aw", line=self.line_of(node))
        return pre + [line]

    def _canonical(self, node: cst.Yield | cst.Await, suspension: cst.BaseExpression,
                   target: str | None, operator: cst.BaseAugOp | None = None) -> cst.SimpleStatementLine:
        state = cst.Assign(targets=[cst.AssignTarget(target=cst.Name(STATE))], value=cst.Integer("0"))
        if target is None:
            second: cst.BaseSmallStatement = cst.Expr(value=suspension)
        elif operator is not None:
            second = cst.AugAssign(target=cst.Name(target), operator=operator, value=suspension)
        else:
            second = cst.Assign(targets=[cst.AssignTarget(target=cst.Name(target))], value=suspension)
        line = cst.SimpleStatementLine(body=[state, second])
        self.yield_lines[id(line)] = self.line_of(node)
        self.yield_nodes[id(line)] = node
        return line

    # -- generic -----------------------------------------------------------------------------
    def lower(self, node: cst.BaseExpression) -> tuple[Stmts, cst.BaseExpression]:
        if not has_suspension(node):
            return [], node
        method = getattr(self, "lower_" + type(node).__name__, None)
        if method is None:
            raise Unsupported(node, f"suspension inside {type(node).__name__}")
        return method(node)

    def capture(self, node: cst.BaseExpression, pre: Stmts) -> cst.BaseExpression:
        """Evaluate ``node`` now into a temporary (constants and the names of the compiler's generator
        expression functions and of its ``iter`` need none; a plain local is only read now, by
        ``read_now``: nothing rebinds it meanwhile)."""
        if is_constant(node) or (isinstance(node, cst.Name) and node.value.startswith(_NEVER_REBOUND)):
            return node
        if isinstance(node, cst.Name) and node.value in self.plain_locals:
            pre.append(read_now(node))
            return node
        temp = self.new_temp("t", code_of(node))
        pre.append(assign(temp, node))
        return cst.Name(temp)

    def sequence(self, items: Sequence[cst.BaseExpression],
                 stars: Sequence[str] | None = None) -> tuple[Stmts, list[cst.BaseExpression]]:
        """Lower operands evaluated left to right; those before the last suspension are captured.

        ``stars[i]`` is ``"*"`` or ``"**"`` for an unpacked operand: it is consumed where it stands,
        so its contents (not the iterable or mapping itself) are captured.
        """
        last = max((i for i, item in enumerate(items) if has_suspension(item)), default=-1)
        pre: Stmts = []
        out: list[cst.BaseExpression] = []
        for i, item in enumerate(items):
            if i < last:
                item_pre, lowered = self.lower(item)
                pre += item_pre
                star = stars[i] if stars else ""
                out.append(self.capture(_unpacked(lowered, star) if star else lowered, pre))
            elif i == last:
                item_pre, lowered = self.lower(item)
                pre += item_pre
                out.append(lowered)
            else:
                out.append(item)
        return pre, out

    # -- node kinds --------------------------------------------------------------------------
    def lower_Yield(self, node: cst.Yield) -> tuple[Stmts, cst.BaseExpression]:
        temp = self.new_temp("y", line=self.line_of(node))
        return self.suspend_stmt(node, temp), cst.Name(temp)

    def lower_Await(self, node: cst.Await) -> tuple[Stmts, cst.BaseExpression]:
        temp = self.new_temp("a", line=self.line_of(node))
        return self.suspend_stmt(node, temp), cst.Name(temp)

    def _value(self, node: cst.Attribute | cst.NamedExpr) -> tuple[Stmts, cst.BaseExpression]:
        """Nodes whose only evaluated part is ``value``."""
        pre, value = self.lower(node.value)
        return pre, node.with_changes(value=value)

    lower_Attribute = lower_NamedExpr = _value

    def lower_UnaryOperation(self, node: cst.UnaryOperation) -> tuple[Stmts, cst.BaseExpression]:
        pre, value = self.lower(node.expression)
        return pre, node.with_changes(expression=value)

    def lower_BinaryOperation(self, node: cst.BinaryOperation) -> tuple[Stmts, cst.BaseExpression]:
        pre, (left, right) = self.sequence([node.left, node.right])
        return pre, node.with_changes(left=left, right=right)

    def lower_BooleanOperation(self, node: cst.BooleanOperation) -> tuple[Stmts, cst.BaseExpression]:
        pre, left = self.lower(node.left)
        temp = self.new_temp("b", code_of(node))
        pre.append(assign(temp, left))
        right_pre, right = self.lower(node.right)
        test: cst.BaseExpression = cst.Name(temp)
        if isinstance(node.operator, cst.Or):
            test = cst.UnaryOperation(operator=cst.Not(), expression=test)
        pre.append(if_(test, right_pre + [assign(temp, right)]))
        return pre, cst.Name(temp)

    def lower_IfExp(self, node: cst.IfExp) -> tuple[Stmts, cst.BaseExpression]:
        pre, test = self.lower(node.test)
        temp = self.new_temp("c", code_of(node))
        body_pre, body = self.lower(node.body)
        else_pre, orelse = self.lower(node.orelse)
        pre.append(if_(test, body_pre + [assign(temp, body)], else_pre + [assign(temp, orelse)]))
        return pre, cst.Name(temp)

    def lower_Comparison(self, node: cst.Comparison) -> tuple[Stmts, cst.BaseExpression]:
        if len(node.comparisons) == 1:
            pre, (left, right) = self.sequence([node.left, node.comparisons[0].comparator])
            return pre, node.with_changes(left=left, comparisons=[node.comparisons[0].with_changes(comparator=right)])
        # Chained: a < b < c  ==  a < b and b < c, with b evaluated once.
        pre, left = self.lower(node.left)
        left = self.capture(left, pre)
        result = self.new_temp("c", code_of(node))
        return pre + self._chain(left, list(node.comparisons), result), cst.Name(result)

    def _chain(self, left: cst.BaseExpression, comparisons: list[cst.ComparisonTarget], result: str) -> Stmts:
        target = comparisons[0]
        stmts, right = self.lower(target.comparator)
        last = len(comparisons) == 1
        if not last:
            right = self.capture(right, stmts)
        stmts.append(assign(result, cst.Comparison(left=left, comparisons=[target.with_changes(comparator=right)])))
        if not last:
            stmts.append(if_(cst.Name(result), self._chain(right, comparisons[1:], result)))
        return stmts

    def lower_Subscript(self, node: cst.Subscript) -> tuple[Stmts, cst.BaseExpression]:
        parts: list[cst.BaseExpression] = [node.value]
        for element in node.slice:
            s = element.slice
            if isinstance(s, cst.Index):
                parts.append(s.value)
            else:
                assert isinstance(s, cst.Slice)
                parts.extend(x for x in (s.lower, s.upper, s.step) if x is not None)
        pre, lowered = self.sequence(parts)
        it = iter(lowered)
        value = next(it)
        new_slice = []
        for element in node.slice:
            s = element.slice
            if isinstance(s, cst.Index):
                new_slice.append(element.with_changes(slice=s.with_changes(value=next(it))))
            else:
                assert isinstance(s, cst.Slice)
                new_slice.append(element.with_changes(slice=s.with_changes(
                    lower=next(it) if s.lower is not None else None,
                    upper=next(it) if s.upper is not None else None,
                    step=next(it) if s.step is not None else None)))
        return pre, node.with_changes(value=value, slice=new_slice)

    def lower_Call(self, node: cst.Call) -> tuple[Stmts, cst.BaseExpression]:
        items = [node.func] + [arg.value for arg in node.args]
        stars = [""] + [arg.star if isinstance(arg.star, str) else "" for arg in node.args]
        pre, lowered = self.sequence(items, stars)
        args = [arg.with_changes(value=value) for arg, value in zip(node.args, lowered[1:])]
        return pre, node.with_changes(func=lowered[0], args=args)

    def _elements(self, elements: Sequence[cst.BaseElement]) -> tuple[Stmts, list[cst.BaseElement]]:
        stars = ["*" if isinstance(e, cst.StarredElement) else "" for e in elements]
        pre, lowered = self.sequence([e.value for e in elements], stars)
        return pre, [e.with_changes(value=v) for e, v in zip(elements, lowered)]

    def _display(self, node: cst.Tuple | cst.List | cst.Set) -> tuple[Stmts, cst.BaseExpression]:
        pre, elements = self._elements(node.elements)
        return pre, node.with_changes(elements=elements)

    lower_Tuple = lower_List = lower_Set = _display

    def lower_Dict(self, node: cst.Dict) -> tuple[Stmts, cst.BaseExpression]:
        items: list[cst.BaseExpression] = []
        stars: list[str] = []
        for e in node.elements:
            if isinstance(e, cst.DictElement):
                items += [e.key, e.value]
                stars += ["", ""]
            else:
                items.append(e.value)
                stars.append("**")
        pre, lowered = self.sequence(items, stars)
        it = iter(lowered)
        out: list[cst.BaseDictElement] = []
        for e in node.elements:
            if isinstance(e, cst.DictElement):
                out.append(e.with_changes(key=next(it), value=next(it)))
            else:
                out.append(e.with_changes(value=next(it)))
        return pre, node.with_changes(elements=out)

    def _comprehension(self, node: cst.BaseComp) -> tuple[Stmts, cst.BaseExpression]:
        pre, iterable = self.lower(node.for_in.iter)
        return pre, node.with_changes(for_in=node.for_in.with_changes(iter=iterable))

    lower_ListComp = lower_SetComp = lower_DictComp = lower_GeneratorExp = _comprehension

    def lower_ConcatenatedString(self, node: cst.ConcatenatedString) -> tuple[Stmts, cst.BaseExpression]:
        pre, (left, right) = self.sequence([node.left, node.right])
        return pre, cst.BinaryOperation(left=left, operator=cst.Add(), right=right)

    def lower_FormattedString(self, node: cst.FormattedString) -> tuple[Stmts, cst.BaseExpression]:
        # Each replacement field is formatted when reached; capture the formatted piece.
        pieces: list[cst.BaseExpression] = []
        for part in node.parts:
            if isinstance(part, cst.FormattedStringExpression):
                pieces.append(node.with_changes(parts=[part], lpar=[], rpar=[]))
        last = max((i for i, p in enumerate(pieces) if has_suspension(p)), default=-1)
        pre: Stmts = []
        new_parts: list[cst.BaseFormattedStringContent] = []
        index = 0
        for part in node.parts:
            if not isinstance(part, cst.FormattedStringExpression):
                new_parts.append(part)
                continue
            if part.equal is not None:
                # f"{expr=}" shows the expression's text: keep it, since the expression is rewritten.
                text = code_of(part.whitespace_before_expression) + code_of(part.expression) + \
                    code_of(part.whitespace_after_expression) + code_of(part.equal)
                new_parts.append(cst.FormattedStringText(text.replace("{", "{{").replace("}", "}}")))
                conversion = part.conversion if part.conversion is not None or part.format_spec is not None else "r"
                part = part.with_changes(equal=None, conversion=conversion,
                                         whitespace_before_expression=cst.SimpleWhitespace(""),
                                         whitespace_after_expression=cst.SimpleWhitespace(""))
            if index <= last:
                field_pre, value = self.lower(part.expression)
                pre += field_pre
                spec_pre: Stmts = []
                spec = part.format_spec
                if spec is not None and any_part_suspends(spec):
                    raise Unsupported(part, "suspension inside an f-string format spec")
                piece = node.with_changes(parts=[part.with_changes(expression=value)], lpar=[], rpar=[])
                pre += spec_pre
                if index < last:
                    temp = self.new_temp("f", code_of(part.expression))
                    pre.append(assign(temp, piece))
                    new_parts.append(cst.FormattedStringExpression(expression=cst.Name(temp)))
                else:
                    new_parts.append(part.with_changes(expression=value))
            else:
                new_parts.append(part)
            index += 1
        return pre, node.with_changes(parts=new_parts)


def read_now(name: cst.Name) -> cst.SimpleStatementLine:
    """``name`` as a statement: a plain local that is read again after an await is read here too, where
    CPython reads it, so that it raises UnboundLocalError before the await when it is unbound."""
    return small(cst.Expr(value=name))


def _unpacked(node: cst.BaseExpression, star: str) -> cst.BaseExpression:
    """``(*x,)`` or ``{**x}``: what an unpacked operand contributes, taken now."""
    if star == "*":
        return cst.Tuple(elements=[cst.StarredElement(value=node)])
    return cst.Dict(elements=[cst.StarredDictElement(value=node)])


def any_part_suspends(parts: Sequence[cst.CSTNode]) -> bool:
    return any(has_suspension(p) for p in parts)


