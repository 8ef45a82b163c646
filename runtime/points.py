"""``point(name, value)``: gives a suspension point of a durable function a name that survives edits."""
from __future__ import annotations

from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
def point(name: str) -> None: ...
@overload
def point(name: str, value: T) -> T: ...


def point(name: str, value: Any = None) -> Any:
    """Name the suspension point this call is the operand of: ``decision = yield point("approval",
    wait("approval"))``, ``total = yield from point("charge", charge(order))`` or ``yield point("tick")``.

    A run saved at a named point resumes at the point of the same name in the code deployed later,
    however the statements around it changed (without a name, a point is known by its statement and
    the statements enclosing it). The name is a string literal of 1 to 100 letters, digits or ``_.:-``,
    used once per function, and the call must be the direct operand of ``yield`` or ``yield from``
    (the compiler checks both: DG008, DG009).

    The compiler removes the call, so compiled code yields ``value`` at no cost; run natively, the call
    returns ``value`` unchanged, so native and compiled runs behave alike.
    """
    return value
