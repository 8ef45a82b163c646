"""The test kit's upgrade in the middle of a run (runtime.testing.Upgrade): deploy plans and migrations, tried."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from runtime.programs.loading import import_program_module
from runtime.testing import Simulation, SimulationError, Upgrade

V1 = '''
from runtime import durable, point, step, wait


def price(item):
    return 10


@durable
def order(item):
    amount = yield step(price, item)
    decision = yield point("approval", wait("approval"))
    return {"item": item, "amount": amount, "note": "v1", "decision": decision}
'''

NOTE_CHANGED = V1.replace('"note": "v1"', '"note": "v2"')

NEW_LOCAL = V1.replace('"note": "v1"', '"note": "v2", "tries": tries').replace(
    "    amount = yield step(price, item)\n", "    amount = yield step(price, item)\n    tries = 1\n")

MIGRATED = NEW_LOCAL + '''

from runtime import migration


@migration(__name__ + ":order", from_point="approval")
def give_tries(old):
    return old.to("approval", tries=0)
'''


@pytest.fixture
def program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    name = f"kit_upgrade_{tmp_path.name[-10:].replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(V1), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield import_program_module(name)
    finally:
        sys.modules.pop(name, None)


def run(module: Any, source: str | None, **options: Any) -> Any:
    upgrade = Upgrade(source, at="approval", **options) if source is not None else None
    return Simulation(signals={"approval": "yes"}, upgrade=upgrade).run(module.order, "book")


def test_a_compatible_change_resumes_under_the_new_code(program: Any) -> None:
    outcome = run(program, NOTE_CHANGED)
    assert outcome.result() == {"item": "book", "amount": 10, "note": "v2", "decision": "yes"}
    assert sys.modules[program.__name__] is program  # put back when the simulation ended
    assert run(program, None).result()["note"] == "v1"


def test_a_change_that_strands_the_run_is_reported_as_blocked(program: Any) -> None:
    outcome = run(program, NEW_LOCAL)
    assert outcome.status == "blocked"
    assert "local 'tries' is needed at this point in the new code" in (outcome.error_text or "")
    with pytest.raises(AssertionError, match="did not finish: it is blocked"):
        outcome.result()


def test_a_migration_takes_the_run_to_the_new_code(program: Any) -> None:
    outcome = run(program, MIGRATED)
    assert outcome.result() == {"item": "book", "amount": 10, "note": "v2", "tries": 0, "decision": "yes"}
    assert run(program, None).result()["note"] == "v1"  # the migration went with the new code


def test_migrations_may_come_from_a_module_of_their_own(program: Any, tmp_path: Path) -> None:
    moves = f"{program.__name__}_moves"
    (tmp_path / f"{moves}.py").write_text(textwrap.dedent(f'''
        from runtime import migration


        @migration("{program.__name__}:order", from_point="approval")
        def give_tries(old):
            return old.to("approval", tries=5)
        '''), encoding="utf-8")
    try:
        outcome = run(program, NEW_LOCAL, migrations=[moves])
        assert outcome.result()["tries"] == 5
    finally:
        sys.modules.pop(moves, None)
    assert run(program, None).result()["note"] == "v1"


def test_the_new_source_may_be_a_file(program: Any, tmp_path: Path) -> None:
    path = tmp_path / "v2" / "order_v2.py"
    path.parent.mkdir()
    path.write_text(NOTE_CHANGED, encoding="utf-8")
    assert run(program, str(path)).result()["note"] == "v2"
    assert run(program, path).result()["note"] == "v2"


def test_bad_upgrades_get_a_clear_error(program: Any) -> None:
    with pytest.raises(SimulationError, match="cannot read the new source"):
        run(program, "missing_file.py")
    with pytest.raises(SimulationError, match="does not load: NameError"):
        run(program, V1 + "\nundefined_name\n")
    assert run(program, None).result()["note"] == "v1"
