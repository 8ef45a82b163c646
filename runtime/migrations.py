"""Migrations: user functions that move runs suspended under an old version of a durable function to the code now.

``@runtime.migration("app.flows:onboard", from_version=..., from_point=..., to_version=...)`` registers a
function ``fn(old: OldFrame) -> Resume | Cancel``. Restore (``runtime.snapshot``) applies one to a frame
whose version is not the current one when one matches it; a match by version and point wins over one by
point alone, which wins over one by version alone, and any match wins over the automatic upgrade
(``runtime.compat``). A migration with ``to_version`` produces a frame of that version, which the next
matching migration may take (a chain across deploys, at most ``MAX_CHAIN`` long, each migration at most
once); the frame the chain ends with is judged against the code loaded now like any other.

Migrations run user code, on decoded values, during restore only (never when a snapshot is inspected).
They must be pure: a run whose next commit fails is restored, and migrated, again from the same snapshot.
A migration that raises makes restore raise ``MigrationError``; ``Cancel`` makes it raise
``MigrationCancelled``, which the runner turns into a cancelled run.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from . import compat
from .errors import IncompatibleCodeError
from .registry import FunctionMeta

MAX_CHAIN = 16
"""How many migrations one restore applies to a frame at most."""

_INTERNAL = "_dg_"  # the prefix of the compiler's own locals (user code cannot use it)


@dataclass(frozen=True)
class Resume:
    """Resume the run at ``point`` (an explicit point name, a label or a key of the code the migration
    moves it to) with these user locals and, optionally, these compiler locals (by structural name)."""

    point: str
    locals: dict[str, Any]
    slots: dict[str, Any] | None = None


@dataclass(frozen=True)
class Cancel:
    """End the run instead: restore raises ``MigrationCancelled`` with this reason."""

    reason: str


@dataclass
class OldFrame:
    """A frame as the old code left it: where (``point`` is the label, ``key`` its identity, ``line`` the
    line in the old code, None after another migration), the user's locals (captured ones included) and the
    compiler's own locals by their structural names (``_dg_<kind><n>_<owner>``)."""

    function: str
    version: str | None
    point: str | None
    key: str | None
    line: int | None
    locals: dict[str, Any]
    slots: dict[str, Any] = field(default_factory=dict)

    def to(self, point: str, **changes: Any) -> Resume:
        """Resume at ``point`` with every local kept, except those ``changes`` sets (or adds)."""
        return Resume(point, {**self.locals, **changes}, dict(self.slots))


class MigrationError(IncompatibleCodeError):
    """A migration failed (raised, or returned something that is not a Resume or Cancel): the run stays
    as it was. ``migration`` is the migration's ``module:qualname``, ``function`` the durable function."""

    def __init__(self, message: str, *, migration: str, function: str) -> None:
        super().__init__(message)
        self.migration = migration
        self.function = function


class MigrationCancelled(IncompatibleCodeError):
    """A migration returned ``Cancel(reason)``: the run must end as cancelled (its finally blocks cannot
    run: the old code is gone)."""

    def __init__(self, message: str, *, migration: str, function: str, reason: str) -> None:
        super().__init__(message)
        self.migration = migration
        self.function = function
        self.reason = reason


Migrate = Callable[[OldFrame], "Resume | Cancel"]
M = TypeVar("M", bound=Callable[..., Any])


@dataclass(frozen=True)
class Migration:
    """One registered migration."""

    fn: Migrate
    name: str  # module:qualname of fn
    function: str
    from_version: str | None
    from_point: str | None
    to_version: str | None

    def rank(self, version: str | None, key: str | None, display: str | None, also: frozenset[str] = frozenset()
             ) -> int:
        """3: it names this version and point, 2: this point, 1: this version, 0: it does not match. ``also``:
        the key and label of the point of the current code that answers to ``key`` (a point named since)."""
        if self.from_version is not None and not (version or "").startswith(self.from_version):
            return 0
        if self.from_point is not None:
            if not {self.from_point, "@" + self.from_point}.intersection({key, display, *also}):
                return 0
            return 3 if self.from_version is not None else 2
        return 1


REGISTERED: dict[str, list[Migration]] = {}
"""The registered migrations, by the durable function they move (``module:qualname``)."""
GENERATION = [0]
"""How many times a migration was registered (workers' code keys include the migrations)."""


def migration(function: str, *, from_version: str | None = None, from_point: str | None = None,
              to_version: str | None = None) -> Callable[[M], M]:
    """Register the decorated ``fn(old: OldFrame) -> Resume | Cancel`` for runs of ``function``
    (``"module:qualname"``) suspended under ``from_version`` (a version in hex, or its first 8 digits at least,
    as ``durable ls`` and ``durable plan`` show it) and/or at ``from_point`` (a point's explicit name, its
    label or its key; also the name or label of the point of the current code that answers to the frame's
    point: a point named since). ``to_version``: the version of the code ``fn`` moves the run to, when that is
    not the code loaded now (another migration may then take it further); None means the current code."""
    if not isinstance(function, str) or function.count(":") != 1 or not all(function.partition(":")[::2]):
        raise ValueError(f"migration(): the function is named 'module:qualname', not {function!r}")
    if from_version is None and from_point is None:
        raise ValueError(f"migration() for {function}: give from_version, from_point or both")
    if from_version is not None and (len(from_version) < 8 or not all(c in "0123456789abcdef" for c in from_version)):
        raise ValueError(f"migration() for {function}: from_version is a version in hex (at least its first 8 "
                         f"digits, as durable ls and plan show it), not {from_version!r}")
    for what, value in (("from_version", from_version), ("from_point", from_point), ("to_version", to_version)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"migration() for {function}: {what} must be a non-empty str, not {value!r}")

    def register(fn: M) -> M:
        if not callable(fn):
            raise TypeError(f"@migration needs a function, not {type(fn).__name__!r}")
        name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        made = Migration(fn, name, function, from_version, from_point, to_version)
        GENERATION[0] += 1
        known = REGISTERED.setdefault(function, [])
        for i, other in enumerate(known):
            if other.name == name:  # its module was imported again
                known[i] = made
                return fn
            if (other.from_version, other.from_point) == (from_version, from_point):
                raise ValueError(f"migration {name} for {function} (from_version={from_version!r}, "
                                 f"from_point={from_point!r}) matches the same frames as {other.name}")
        known.append(made)
        return fn

    return register


def find(header: compat.FrameHeader, meta: FunctionMeta | None) -> Migration | None:
    """The migration restore applies first to ``header``'s frame under ``meta`` (None: none applies)."""
    if meta is None or compat.same_code(header.version, header.fingerprint, meta) or header.ident not in REGISTERED:
        return None
    return _best(header.ident, header.saved_version, header.key, header.display, meta, set())


def _best(ident: str, version: str, key: str | None, display: str | None, meta: FunctionMeta,
          used: set[str]) -> Migration | None:
    state = meta.state_for(key) if key is not None else None
    also = frozenset(meta.point_of(state)) if state else frozenset()
    ranked = [(m.rank(version, key, display, also), m) for m in REGISTERED.get(ident, ()) if m.name not in used
              # a pinned function moves only through a migration that names the version it leaves
              and (m.from_version is not None or not meta.keep_version)]
    top = max((rank for rank, _ in ranked), default=0)
    best = [m for rank, m in ranked if rank == top and rank]
    if len(best) > 1:
        names = ", ".join(m.name for m in best)
        raise MigrationError(f"migrations {names} all match {ident} suspended at {display or key} under version "
                             f"{version}; keep one", migration=best[0].name, function=ident)
    return best[0] if best else None


def apply(first: Migration, header: compat.FrameHeader, values: dict[str, Any], cells: dict[str, types.CellType],
          meta: FunctionMeta, report: list[dict[str, Any]] | None
          ) -> tuple[compat.Adaptation, dict[str, Any], dict[str, types.CellType]]:
    """Run ``first`` (then the migrations that take its result further) on a decoded frame; return how the
    result resumes under ``meta`` with its values and cells (``compat.judge_migrated``). Appends one entry
    per migration applied to ``report``."""
    user = {n: v for n, v in values.items() if not n.startswith(_INTERNAL)}
    for name, cell in cells.items():
        try:
            user[name] = cell.cell_contents
        except ValueError:
            pass  # an empty cell: the variable is unbound
    old = OldFrame(header.ident, header.saved_version, header.display, header.key, header.line, user,
                   {n: v for n, v in values.items() if n.startswith(_INTERNAL)})
    current: Migration | None = first
    used: set[str] = set()
    applied: list[dict[str, Any]] = []
    result = None
    while current is not None:
        if len(used) == MAX_CHAIN:
            raise MigrationError(f"more than {MAX_CHAIN} migrations chained for {header.ident}, last {current.name}",
                                 migration=current.name, function=header.ident)
        used.add(current.name)
        result = _run(current, old)
        applied.append({"migration": current.name, "function": header.ident, "from_version": old.version,
                        "from_point": old.point, "to_point": result.point})
        target = current.to_version
        if target is None or target == meta.version:
            break
        old = OldFrame(header.ident, target, result.point, result.point, None, dict(result.locals),
                       dict(result.slots or {}))
        current = _best(header.ident, target, result.point, result.point, meta, used)
    assert result is not None
    # captured variables the migration left as they were stay in their cells (a nested function may share one)
    kept = {n: c for n, c in cells.items() if n in result.locals and _holds(c, result.locals[n])}
    new_values = {n: v for n, v in result.locals.items() if n not in kept}
    new_values.update(result.slots or {})
    adapt = compat.judge_migrated(header.ident, result.point, list(new_values), list(kept), meta,
                                  applied[-1]["migration"])
    if report is not None:
        report.extend(applied)
    return adapt, new_values, kept


def _holds(cell: types.CellType, value: Any) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:
        return False


def _run(m: Migration, old: OldFrame) -> Resume:
    where = f"migration {m.name} of {old.function} (version {old.version}, point {old.point or old.key})"
    try:
        result = m.fn(old)
    except Exception as exc:  # noqa: BLE001 - any error of user code: the run stays as it was
        raise MigrationError(f"{where} failed: {type(exc).__name__}: {exc}", migration=m.name,
                             function=old.function) from exc
    if isinstance(result, Cancel):
        raise MigrationCancelled(f"{where} cancelled the run: {result.reason}", migration=m.name,
                                 function=old.function, reason=result.reason)
    if not isinstance(result, Resume):
        raise MigrationError(f"{where} returned {type(result).__name__}, not runtime.Resume or runtime.Cancel",
                             migration=m.name, function=old.function)
    problem = _check(result)
    if problem:
        raise MigrationError(f"{where} returned a Resume whose {problem}", migration=m.name, function=old.function)
    return result


def _check(result: Resume) -> str | None:
    if not isinstance(result.point, str) or not result.point:
        return f"point is {result.point!r}, not the name, label or key of a point"
    if not isinstance(result.locals, dict):
        return f"locals are a {type(result.locals).__name__}, not a dict"
    for name in result.locals:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith(_INTERNAL):
            return f"locals name {name!r}, which is not a user's local"
    if result.slots is not None:
        if not isinstance(result.slots, dict):
            return f"slots are a {type(result.slots).__name__}, not a dict"
        for name in result.slots:
            if not isinstance(name, str) or not name.isidentifier() or not name.startswith(_INTERNAL):
                return f"slots name {name!r}, which is not a compiler local"
    return None
