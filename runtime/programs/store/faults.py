"""Fault injection for crash tests: kill the process at a named point inside a store transaction.

Set ``DURABLE_FAULTS`` before the process starts (it is read once, at import)::

    DURABLE_FAULTS=commit.updated:1            # exit the 1st time commit.updated is reached
    DURABLE_FAULTS=claim.selected:3,signal.inserted:1
    DURABLE_FAULTS='*:5'                       # exit at the 5th point reached, whatever its name

When a point is hit the process writes one line to stderr and calls ``os._exit(86)`` at once: no
``finally`` blocks, no rollback, no flushing, as if the machine lost power (SQLite must recover).
When ``DURABLE_FAULTS`` is unset, ``point`` is one call and one boolean check.

Points the SQLite store reaches (all inside its write transaction unless marked *after*):

- ``migrate.applied``: the schema migrations are written, not yet committed (opening a store)
- ``create.inserted``: a new execution's row is inserted
- ``claim.selected``: the execution to lease is chosen, nothing written yet
- ``claim.updated``: the lease is written
- ``renew.updated``: the leases are extended
- ``commit.updated``: the compare-and-swap on the execution row succeeded
- ``commit.step_written``: the change's steps are inserted and its step updates applied (reached once, after
  the last of them)
- ``commit.signal_consumed``: the signal is marked consumed
- ``commit.before_commit``: everything is written, ``COMMIT`` is next
- ``commit.after_commit``: *after* ``COMMIT``: the change is durable, the caller has not heard yet
- ``signal.inserted``: a signal's row is inserted
- ``cancel.updated``: ``cancel_requested`` is set
- ``prune.batch_deleted``: a batch of ended executions, their steps and signals are deleted

The PostgreSQL store reaches the same points, except ``claim.selected``: its claim selects and leases in
one statement, after which it reaches ``claim.updated``.
"""
from __future__ import annotations

import os
import sys

EXIT_CODE = 86
ANY = "*"


def parse(spec: str) -> dict[str, int]:
    """``"name:N,name:N"`` → ``{name: N}``; raises ValueError with a readable message."""
    targets: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, count = item.rpartition(":")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"DURABLE_FAULTS: {item!r} is not name:N (N >= 1); "
                             "expected e.g. commit.updated:1,claim.selected:2 or *:3")
        targets[name] = int(count)
    return targets


_TARGETS: dict[str, int] = parse(os.environ.get("DURABLE_FAULTS", ""))
_ENABLED: bool = bool(_TARGETS)
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Mark a point where a crash test may kill the process (free unless DURABLE_FAULTS is set)."""
    if _ENABLED:
        _reach(name)


def _reach(name: str) -> None:
    for key in (name, ANY):
        if key in _TARGETS:
            _hits[key] = _hits.get(key, 0) + 1
            if _hits[key] == _TARGETS[key]:
                sys.stderr.write(f"durable faults: exiting with {EXIT_CODE} at {name} "
                                 f"(hit {_hits[key]} of {key})\n")
                sys.stderr.flush()
                os._exit(EXIT_CODE)
