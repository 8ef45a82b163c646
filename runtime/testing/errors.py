"""The test kit's errors: a simulation given bad input, a program that does not end, a run that does not survive."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..values.allow import serializable

if TYPE_CHECKING:
    from .findings import Finding


class SimulationError(Exception):
    """A simulation cannot run as asked: a function that is not durable, a fake for a step name that does not
    exist, a program that does not end within its request limit, or one stuck waiting for a signal the
    script never sends. The message says what is wrong and what to do."""


@serializable  # a program may hold it across a yield, as any exception a step raised
class InjectedFailure(Exception):
    """What a step raises when a simulation injects a failure into one of its attempts (``failures=``)."""


class SurvivalError(AssertionError):
    """``assert_survives_crashes`` found runs that did not survive a crash: ``findings`` lists them and the
    message is the report."""

    def __init__(self, report: str, findings: "list[Finding]") -> None:
        super().__init__(report)
        self.findings = findings
