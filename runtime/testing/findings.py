"""What a crash check found, and the report a user reads: one entry per problem, with the crash point and a hint."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .spies import short

if TYPE_CHECKING:
    from .simulation import Config, Outcome
    from .spies import Call

PERSIST = "cannot persist the program: "

TITLES = {
    "unserializable": "a value cannot be snapshotted",
    "differs": "the run ended differently after a crash",
    "ran twice": "an effect outside a step ran again after a crash",
    "fresh": "the run went on differently in a fresh interpreter",
    "error": "the run could not go on after a crash",
}


@dataclass
class Finding:
    """One problem: its ``kind`` (a key of TITLES), the crash point ``where`` it showed (None: without any
    crash), and what happened, with a hint."""

    kind: str
    where: str | None
    message: str
    short: str = ""  # what happened at this crash point, in a few words (for the list of other points)

    def text(self) -> str:
        lines = [TITLES[self.kind]]
        if self.where:
            lines.append(f"   crash: {self.where}")
        lines.extend(f"   {line}" for line in self.message.splitlines())
        return "\n".join(lines)


def unserializable(outcome: "Outcome") -> Finding | None:
    """The finding when a run failed because its state could not be snapshotted."""
    text = outcome.error_text or ""
    if outcome.status != "failed" or not text.startswith(PERSIST):
        return None
    return Finding("unserializable", None, text[len(PERSIST):])


def differs(where: str, expected: "Outcome", got: "Outcome", events: Sequence[tuple[str, str]]) -> Finding:
    reran = [text for kind, text in events if kind == "step"]
    lines = [f"without crashes: {expected.describe()}", f"after the crash: {got.describe()}"]
    if reran:
        lines.append(f"after the crash the worker ran: {'; '.join(reran[:4])}" + (" ..." if len(reran) > 4 else ""))
    lines.append("hint: the result must depend only on the program's locals, its arguments and what its steps and "
                 "signals returned; state kept elsewhere in memory (module globals, caches, objects shared with "
                 "other code) is lost at a crash, and a step that runs again must return the same (make it "
                 "idempotent with runtime.current_step().idempotency_key)")
    return Finding("differs", where, "\n".join(lines), got.describe())


def ran_twice(where: str, name: str, count: int, expected: int, calls: Sequence["Call"]) -> Finding:
    lines = [f"{name} was called {count} times outside a step ({expected} without crashes)"]
    for call in calls[:3]:
        lines.append(f"again: {call.text(name)} at {call.where}")
    lines.append(f"hint: code between two commits runs again when a run resumes from its last commit; make the "
                 f"call a step, which runs once its result is committed: `yield step({name}, ...)`")
    return Finding("ran twice", where, "\n".join(lines), f"{count} calls")


def report(config: "Config", problems: Sequence[Finding], tried: int, possible: int) -> str:
    """The readable report: the program, then each kind of problem once — in full at the first crash point
    that showed it, then the other points that did, one line each."""
    call = ", ".join([*(short(a, 40) for a in config.args), *(f"{k}={short(v, 40)}" for k, v in config.kwargs.items())])
    head = f"{config.ref}({call}) does not survive crashes (seed {config.seed}"
    head += f"; {tried} of {possible} crash points tried):" if possible else "):"
    groups: dict[tuple[str, str], list[Finding]] = {}
    for problem in problems:
        key = problem.message.splitlines()[0] if problem.kind == "ran twice" else ""
        groups.setdefault((problem.kind, key), []).append(problem)
    parts = [head]
    for number, group in enumerate(groups.values(), 1):
        text = f"{number}. {group[0].text()}"
        others = [p for p in group[1:] if p.where]
        for other in others[:OTHERS]:
            text += f"\n   also: {other.where}" + (f" → {other.short}" if other.short else "")
        if len(others) > OTHERS:
            text += f"\n   (and {len(others) - OTHERS} more crash points)"
        parts.append(text)
    return "\n\n".join(parts)


OTHERS = 3
"""How many other crash points the report lists under a problem it shows in full."""

