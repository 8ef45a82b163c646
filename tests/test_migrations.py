"""Migrations (issue 13, ``runtime.migrations``) and ``@durable(keep_version=True)``: runs saved under an old
version move to the code loaded now through a registered function, which restore runs on the decoded frame.

Each case compiles v1 under a module name, runs it to a point, snapshots it, loads a later version under the
same name (some versions are never loaded: a chain goes through them) and restores with migrations registered.
"""
from __future__ import annotations

import re
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from runtime import (Cancel, IncompatibleCodeError, MigrationError, OldFrame, Resume, detach, inspect_snapshot,
                     migration, restore, snapshot)
from runtime import migrations
from runtime.compat import PointMismatchError
from runtime.migrations import MigrationCancelled
from harness import drive, load_compiled, load_native, tmp_module_dir, unique_module_name

V1 = """
from runtime import durable
from runtime import point


@durable
def flow(items):
    count = 0
    for item in items:
        got = yield point("ask", ("ask", item, count))
        count += got
    note = yield point("confirm", ("confirm", count))
    return (count, note, "v1")
"""
V2 = V1.replace("count", "n").replace('"v1"', '"v2"')
V3 = V1.replace("count", "total").replace('"v1"', '"v3"')
ITEMS = ["a", "b", "c"]
TO_ASK = [None, 10]      # suspended at "ask" with item "b", count 10
REST = [20, 30, "ok"]


class Deploy:
    """One module name whose code is replaced version by version."""

    def __init__(self) -> None:
        self.name = unique_module_name("migrate")
        self.directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
        self.function = f"{self.name}:flow"

    def load(self, source: str) -> Any:
        return load_compiled(textwrap.dedent(source), all_generators=False, name=self.name,
                             directory=self.directory)

    def suspended(self, source: str, inputs: list[Any] = TO_ASK) -> bytes:
        gen = self.load(source).flow(ITEMS)
        drive(gen, inputs)
        data = snapshot(gen)
        detach(gen)
        return data


def _version_of(source: str) -> str:
    """The version a source's ``flow`` would declare, without loading it."""
    from transpiler import compile_source
    found = re.search(r"version='([0-9a-f]+)'", compile_source(textwrap.dedent(source)))
    assert found is not None
    return found.group(1)


@pytest.fixture
def deploy() -> Iterator[Deploy]:
    made = Deploy()
    yield made
    migrations.REGISTERED.pop(made.function, None)


def _unregister(deploy: Deploy, fn: Callable[..., Any]) -> None:
    name = f"{fn.__module__}:{fn.__qualname__}"
    migrations.REGISTERED[deploy.function] = [m for m in migrations.REGISTERED[deploy.function] if m.name != name]


def test_registration_errors(deploy: Deploy) -> None:
    with pytest.raises(ValueError, match="give from_version, from_point or both"):
        migration(deploy.function)
    with pytest.raises(ValueError, match="'module:qualname'"):
        migration("flow", from_point="ask")
    with pytest.raises(ValueError, match="from_point must be a non-empty str"):
        migration(deploy.function, from_point="")
    with pytest.raises(ValueError, match="to_version must be a non-empty str"):
        migration(deploy.function, from_point="ask", to_version=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a function"):
        migration(deploy.function, from_point="ask")(None)  # type: ignore[type-var]

    @migration(deploy.function, from_point="ask")
    def first(old: OldFrame) -> Resume:
        return old.to("ask")

    with pytest.raises(ValueError, match="matches the same frames as"):
        @migration(deploy.function, from_point="ask")
        def second(old: OldFrame) -> Resume:
            return old.to("ask")

    # the same function registered again (its module imported again) replaces itself
    migration(deploy.function, from_point="ask")(first)
    assert [m.name for m in migrations.REGISTERED[deploy.function]] == [f"{__name__}:{first.__qualname__}"]
    # an unknown function is allowed: its module may be imported later
    migration("not.loaded.yet:flow", from_point="x")(first)
    migrations.REGISTERED.pop("not.loaded.yet:flow")


def test_matching_precedence_version_and_point_over_point_over_version(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    v1 = _version_of(V1)
    deploy.load(V2)
    ran: list[str] = []

    def renaming(tag: str) -> Callable[[OldFrame], Resume]:
        def move(old: OldFrame) -> Resume:
            ran.append(tag)
            return old.to("ask", n=old.locals["count"])
        move.__qualname__ = f"precedence_{tag.replace(' ', '_')}"
        return move

    made = {tag: migration(deploy.function, from_version=version, from_point=point)(renaming(tag))
            for tag, version, point in [("version", v1, None), ("point", None, "ask"), ("both", v1, "ask"),
                                        ("other version", "0" * 16, "ask"), ("other point", None, "confirm")]}
    for expected in ("both", "point", "version"):
        ran.clear()
        detach(restore(data))
        assert ran == [expected]
        _unregister(deploy, made[expected])
    ran.clear()
    with pytest.raises(PointMismatchError) as caught:
        restore(data)
    assert caught.value.reason == "missing-local" and ran == []


UNNAMED = V1.replace('point("ask", ("ask", item, count))', '("ask", item, count)')


@pytest.mark.parametrize("by", ["label", "key"])
def test_a_point_is_named_by_its_label_or_its_key(deploy: Deploy, by: str) -> None:
    data = deploy.suspended(UNNAMED)
    old_meta = deploy.load(UNNAMED).flow.__durable__
    old_key, old_label = old_meta.points[1][:2]
    assert old_label == 'for item in items: › got = yield ("ask", item, count)'
    new_meta = deploy.load(UNNAMED.replace("count", "n")).flow.__durable__
    assert new_meta.state_for(old_key) is None  # the statement was rewritten: its key changed

    @migration(deploy.function, from_point=old_label if by == "label" else old_key)
    def rename(old: OldFrame) -> Resume:
        assert (old.key, old.point) == (old_key, old_label)
        return old.to('for item in items: › got = yield ("ask", item, n)', n=old.locals["count"])

    report: list[dict[str, Any]] = []
    assert drive(restore(data, report), REST)[-1] == ("return", (60, "ok", "v1"))
    assert report[0]["to_point"] == 'for item in items: › got = yield ("ask", item, n)'


def test_not_applied_to_frames_of_the_current_version(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    ran: list[OldFrame] = []

    @migration(deploy.function, from_point="ask")
    def never(old: OldFrame) -> Resume:
        ran.append(old)
        return old.to("ask")

    @migration(deploy.function, from_version=_version_of(V1))
    def never_either(old: OldFrame) -> Resume:
        ran.append(old)
        return old.to("ask")

    report: list[dict[str, Any]] = []
    assert drive(restore(data, report), REST)[-1] == ("return", (60, "ok", "v1"))
    deploy.load("\n\n# lines shifted, same version\n" + V1)
    assert drive(restore(data, report), REST)[-1] == ("return", (60, "ok", "v1"))
    assert ran == [] and report == []


def test_a_renamed_local_gives_what_the_new_code_gives_natively(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    deploy.load(V2)
    with pytest.raises(PointMismatchError, match="local 'n' is needed"):
        restore(data)
    seen: list[OldFrame] = []

    @migration(deploy.function, from_point="ask")
    def count_to_n(old: OldFrame) -> Resume:
        seen.append(old)
        return old.to("ask", n=old.locals["count"])

    report: list[dict[str, Any]] = []
    resumed = drive(restore(data, report), REST)
    native = load_native(V2).flow(ITEMS)
    drive(native, TO_ASK)
    assert resumed == drive(native, REST)
    assert resumed[-1] == ("return", (60, "ok", "v2"))
    [old] = seen
    assert (old.function, old.version, old.point, old.key, old.line) == (deploy.function, _version_of(V1), "@ask",
                                                                      "@ask", 10)
    assert old.locals == {"count": 10}
    assert [re.sub(r"\d+_[0-9a-f]{8}$", "", n) for n in old.slots] == ["_dg_it"]
    assert report == [{"migration": f"{__name__}:{count_to_n.__qualname__}", "function": deploy.function,
                       "from_version": _version_of(V1), "from_point": "@ask", "to_point": "ask"}]


def test_a_chain_across_two_deploys_never_loads_the_middle_version(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    v1, v2 = _version_of(V1), _version_of(V2)
    deploy.load(V3)
    seen: list[OldFrame] = []

    @migration(deploy.function, from_version=v2)
    def n_to_total(old: OldFrame) -> Resume:
        seen.append(old)
        return old.to("ask", total=old.locals["n"] + 1)

    with pytest.raises(PointMismatchError):  # nothing takes a v1 frame yet
        restore(data)

    @migration(deploy.function, from_version=v1, to_version=v2)
    def count_to_n(old: OldFrame) -> Resume:
        seen.append(old)
        return Resume("ask", {"n": old.locals["count"]}, old.slots)

    report: list[dict[str, Any]] = []
    assert drive(restore(data, report), REST)[-1] == ("return", (61, "ok", "v3"))
    assert [(o.version, o.point, dict(o.locals)) for o in seen] == [(v1, "@ask", {"count": 10}),
                                                                    (v2, "ask", {"n": 10})]
    assert seen[1].line is None and list(seen[1].slots) == list(seen[0].slots)
    assert [(r["migration"].rpartition(".")[2], r["from_version"], r["to_point"]) for r in report] == [
        ("count_to_n", v1, "ask"), ("n_to_total", v2, "ask")]
    from runtime import registry
    assert not any(meta.version == v2 for meta in registry.BY_VERSION.values() if meta.ident == deploy.function)


def test_a_migration_that_raises_leaves_the_run_as_it_was(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    kept = bytes(data)
    deploy.load(V2)

    @migration(deploy.function, from_point="ask")
    def broken(old: OldFrame) -> Resume:
        return old.to("ask", n=old.locals["no such local"])

    report: list[dict[str, Any]] = []
    with pytest.raises(MigrationError) as caught:
        restore(data, report)
    error = caught.value
    assert isinstance(error, IncompatibleCodeError)
    assert error.migration == f"{__name__}:{broken.__qualname__}" and error.function == deploy.function
    assert error.migration in str(error) and "KeyError: 'no such local'" in str(error)
    assert data == kept and report == []

    @migration(deploy.function, from_point="ask")
    def broken(old: OldFrame) -> Resume:  # noqa: F811 - the fix, deployed under the same name
        return old.to("ask", n=old.locals["count"])

    assert drive(restore(data, report), REST)[-1] == ("return", (60, "ok", "v2"))
    assert len(report) == 1


@pytest.mark.parametrize("returned, says", [
    (lambda old: None, "returned NoneType, not runtime.Resume or runtime.Cancel"),
    (lambda old: Resume("ask", {"_dg_it1_00000000": 1}), "which is not a user's local"),
    (lambda old: Resume("ask", {}, {"n": 1}), "which is not a compiler local"),
])
def test_a_migration_returning_nonsense_is_a_migration_error(deploy: Deploy, returned: Any, says: str) -> None:
    data = deploy.suspended(V1)
    deploy.load(V2)
    migration(deploy.function, from_point="ask")(returned)
    with pytest.raises(MigrationError, match=re.escape(says)):
        restore(data)


def test_a_migration_to_a_point_the_code_does_not_have(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    deploy.load(V2)

    @migration(deploy.function, from_point="ask")
    def nowhere(old: OldFrame) -> Resume:
        return old.to("gone", n=1)

    with pytest.raises(PointMismatchError, match="where migration .*nowhere moved it") as caught:
        restore(data)
    assert caught.value.reason == "no-point"


def test_cancel(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    deploy.load(V2)

    @migration(deploy.function, from_version=_version_of(V1))
    def give_up(old: OldFrame) -> Cancel:
        return Cancel(f"count {old.locals['count']} cannot be carried over")

    with pytest.raises(MigrationCancelled) as caught:
        restore(data)
    assert isinstance(caught.value, IncompatibleCodeError)
    assert caught.value.reason == "count 10 cannot be carried over"
    assert caught.value.migration.endswith("give_up") and "cancelled the run" in str(caught.value)


PINNED = V1.replace("@durable\n", "@durable(keep_version=True)\n")


def test_keep_version_resumes_only_the_exact_version_or_through_a_migration_naming_it(deploy: Deploy) -> None:
    data = deploy.suspended(PINNED)
    changed = PINNED.replace('"v1"', '"v2"')  # after the point: an unpinned function would upgrade
    assert drive(restore(data), REST)[-1] == ("return", (60, "ok", "v1"))
    unpinned = Deploy()
    plain = unpinned.suspended(V1)
    unpinned.load(V1.replace('"v1"', '"v2"'))
    assert drive(restore(plain), REST)[-1] == ("return", (60, "ok", "v2"))

    assert deploy.load(changed).flow.__durable__.keep_version
    with pytest.raises(PointMismatchError) as caught:
        restore(data)
    assert caught.value.reason == "pinned"
    ran: list[str] = []

    @migration(deploy.function, from_point="ask")
    def by_point(old: OldFrame) -> Resume:
        ran.append("point")
        return old.to("ask")

    with pytest.raises(PointMismatchError, match="keeps its runs on the version"):
        restore(data)
    assert ran == []

    @migration(deploy.function, from_version=_version_of(PINNED))
    def by_version(old: OldFrame) -> Resume:
        ran.append("version")
        return old.to("ask", count=old.locals["count"] * 2)

    report: list[dict[str, Any]] = []
    assert drive(restore(data, report), REST)[-1] == ("return", (70, "ok", "v2"))
    assert ran == ["version"] and report[0]["migration"].endswith("by_version")
    deploy.load(PINNED)
    ran.clear()
    assert drive(restore(data), REST)[-1] == ("return", (60, "ok", "v1"))  # its own version again
    assert ran == []


def test_inspecting_a_snapshot_never_runs_a_migration(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    deploy.load(V2)
    ran: list[OldFrame] = []

    @migration(deploy.function, from_point="ask")
    def counted(old: OldFrame) -> Resume:
        ran.append(old)
        return old.to("ask", n=old.locals["count"])

    info = inspect_snapshot(data)
    assert info.frames[0].function == deploy.function
    assert ran == []
    detach(restore(data))
    assert len(ran) == 1


def test_the_report_names_upgraded_frames(deploy: Deploy) -> None:
    data = deploy.suspended(V1)
    deploy.load(V1.replace('"v1"', '"v2"'))
    report: list[dict[str, Any]] = []
    assert drive(restore(data, report), REST)[-1] == ("return", (60, "ok", "v2"))
    assert report == [{"upgrade": deploy.function, "from_version": _version_of(V1),
                       "to_version": _version_of(V1.replace('"v1"', '"v2"'))}]


NESTED = """
from runtime import durable
from runtime import point


@durable
def inner(start):
    count = start
    got = yield point("ask", ("ask", count))
    return count + got


@durable
def flow(items):
    held = [inner(100)]
    next(held[0])
    result = yield from inner(len(items))
    try:
        held[0].send(1)
    except StopIteration as stop:
        return (result, stop.value, "v1")
"""


def test_frames_in_a_yield_from_chain_and_held_in_values_are_migrated_each(deploy: Deploy) -> None:
    gen = deploy.load(NESTED).flow(ITEMS)
    assert next(gen) == ("ask", 3)
    data = snapshot(gen)
    detach(gen)
    deploy.load(NESTED.replace("count", "n"))
    ident = f"{deploy.name}:inner"
    seen: list[int] = []

    @migration(ident, from_point="ask")
    def count_to_n(old: OldFrame) -> Resume:
        seen.append(old.locals["count"])
        return old.to("ask", n=old.locals["count"])

    try:
        report: list[dict[str, Any]] = []
        assert drive(restore(data, report), [5]) == [("return", (8, 101, "v1"))]
        assert sorted(seen) == [3, 100]
        assert sorted(r.get("migration", r.get("upgrade")) for r in report) == [
            *[f"{__name__}:{count_to_n.__qualname__}"] * 2]
    finally:
        migrations.REGISTERED.pop(ident, None)
