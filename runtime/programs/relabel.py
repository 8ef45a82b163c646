"""Write the snapshots of runs saved before points had labels (format 1 and 2) again in the current format.

Such a run resumes only under the exact code that wrote it. Relabelling restores it under that same code
and stores its snapshot again with its points' labels, so that a later deploy can upgrade it (README:
Deploying changes). Nothing else about the run changes: status, request, timers, steps and signals stay,
and no user code runs (a restore runs only the compiled prologue).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SnapshotError
from ..snapshot import detach, snapshot
from ..values import open_snapshot, seals
from . import versions
from .clock import SYSTEM, Clock
from .loading import ProgramError
from .records import current_step_mac, execution_parts, restore_stored, text_of
from .store.base import TERMINAL, Change, ConflictError, Execution, Store


@dataclass
class Relabelled:
    """What ``relabel`` did: the runs it wrote again, and those it left (id, why)."""

    done: list[str] = field(default_factory=list)
    current: int = 0  # live runs already in the current format (or not started)
    left: list[tuple[str, str]] = field(default_factory=list)


def relabel(store: Store, *, clock: Clock = SYSTEM, limit: int | None = None) -> Relabelled:
    """Relabel the live runs of ``store`` whose snapshot is of format 1 or 2 (at most ``limit``). A run a
    worker holds right now, whose code changed or whose seal does not verify is left as it is."""
    report = Relabelled()
    for row in store.list():
        if row.status in TERMINAL:
            continue
        if limit is not None and len(report.done) >= limit:
            break
        ex = store.get(row.id)
        try:
            why = _relabel_one(store, ex, clock)
        except ConflictError:
            why = "a worker advanced it meanwhile (it is stored in the current format by then)"
        if why is None:
            report.done.append(ex.id)
        elif why == "":
            report.current += 1
        else:
            report.left.append((ex.id, why))
    return report


def _relabel_one(store: Store, ex: Execution, clock: Clock) -> str | None:
    """None when relabelled, "" when there is nothing to do, else why the run was left."""
    if ex.snapshot is None or ex.damage is not None:
        return "" if ex.damage is None else f"its row is damaged ({ex.damage})"
    try:
        envelope, _ = open_snapshot(ex.snapshot)
    except SnapshotError as exc:
        return f"its snapshot cannot be read: {text_of(exc)}"
    if envelope[1] >= 3:
        return ""
    if ex.lease_owner is not None and (ex.lease_until or 0) > clock.now():
        return f"{ex.lease_owner} holds it now"
    try:
        gen = restore_stored(store, ex)
    except (ProgramError, SnapshotError) as exc:
        return f"{type(exc).__name__}: {text_of(exc)}"
    try:
        frames = versions.frames_of(gen)
        data = snapshot(gen)
    finally:
        detach(gen)
    fields: dict[str, Any] = {"snapshot": data, **versions.describe(frames)}
    fields["mac"] = seals.seal("execution", execution_parts(ex.id, ex.function, ex.args, data, ex.request,
                                                            ex.steps_started, current_step_mac(store, ex)))
    store.commit(Change(ex.id, ex.version, fields=fields, versions=versions.new_versions(frames, set(), clock.now())),
                 now=clock.now())
    return None
