"""Snapshots written before points had labels (format 2, by the runtime of 58dd82e on CPython 3.11, from
``tests/data/format2/legacy_flow.py``) still restore under the current compiler and runtime when the code
is the same: their compiler locals had counter names (``_dg_e1``), which the declaration's
``legacy_names`` translate. Their identity is the ``ast.dump`` fingerprint, which CPython 3.12 and 3.13
compute differently: there they are refused as ``legacy``, with a message saying what to do.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

from harness import drive, load_compiled, load_native, tmp_module_dir
from runtime import inspect_snapshot, restore
from runtime.compat import PointMismatchError

DATA = Path(__file__).parent / "data" / "format2"
SOURCE = (DATA / "legacy_flow.py").read_text(encoding="utf-8")
SAME_FINGERPRINT = sys.version_info < (3, 12)  # ast.dump as on 3.11, where the snapshots were taken


@pytest.mark.parametrize("name, before, after", [
    ("in_loop", [None], [10, 20, 30]),
    ("in_handler", [None, KeyError("k")], [10, 20, 30]),
])
def test_a_format_2_snapshot_restores_under_the_same_code(name, before, after) -> None:
    data = (DATA / f"legacy_flow.{name}.bin").read_bytes()
    assert inspect_snapshot(data).format == 2
    directory = Path(tempfile.mkdtemp(dir=tmp_module_dir()))
    load_compiled(SOURCE, all_generators=False, name="legacy_flow", directory=directory)
    try:
        if not SAME_FINGERPRINT:
            with pytest.raises(PointMismatchError) as caught:
                restore(data)
            assert caught.value.reason == "legacy" and "written before points had labels" in str(caught.value)
            return
        resumed = drive(restore(data), after)
        native = load_native(SOURCE)
        reference = native.legacy_flow(3)
        drive(reference, before)
        assert resumed == drive(reference, after)
    finally:
        sys.modules.pop("legacy_flow", None)
