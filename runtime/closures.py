"""Closure cells of durable frames: read from a suspended frame, and rebuilt into the closure of a restored one
(the value kinds of cells and nested functions are ``values.code_kinds``)."""
from __future__ import annotations

import types
from typing import Any

from . import registry
from .errors import CorruptSnapshotError
from .registry import FunctionMeta

CELLS = "_dg_cells"
"""The local of a durable frame whose (never called) lambda closes over the frame's captured variables."""

_CellType = types.CellType
_FunctionType = types.FunctionType


# -- the frame's cells ---------------------------------------------------------------------------

def frame_cells(frame_locals: Any, free_names: tuple[str, ...]) -> list[Any] | None:
    """``[names, cells]`` of a suspended durable frame, read from its ``_dg_cells`` lambda. A frame
    that has not started has no such lambda yet: its free variables' values travel in fresh cells."""
    holder = frame_locals.get(CELLS)
    if type(holder) is _FunctionType:
        return [list(holder.__code__.co_freevars), list(holder.__closure__ or ())]
    names = [n for n in free_names if n in frame_locals]
    if not names:
        return None
    return [names, [_CellType(frame_locals[n]) for n in names]]


def cells_by_name(frees: Any) -> dict[str, Any]:
    """The decoded ``[names, cells]`` of a frame record as a dict (validated)."""
    if not frees:
        return {}
    names, cells = frees
    if not isinstance(cells, list) or len(cells) != len(names) or not all(type(c) is _CellType for c in cells):
        raise CorruptSnapshotError("not a valid durable snapshot: malformed closure cells")
    return dict(zip(names, cells))


# -- cellular variants -----------------------------------------------------------------------------

def cellular(meta: FunctionMeta, factory: types.CodeType, name: str) -> None:
    """Register the cellular variant of ``meta``'s function (the code named ``name`` inside ``factory``)."""
    todo = list(factory.co_consts)
    while todo:
        const = todo.pop(0)
        if isinstance(const, types.CodeType):
            if const.co_name == name:
                meta.variant = const
                registry.add_alias(meta, const)
                return
            todo.extend(const.co_consts)
    raise RuntimeError(f"cellular variant of {meta.ident} not found")  # pragma: no cover - compiler bug


def closure_for(code: types.CodeType, cells: dict[str, Any], template: Any) -> tuple[Any, ...]:
    """The closure for ``code``: the snapshot's cells by name, ``__class__`` from the template
    function's closure, fresh empty cells for anything else."""
    existing = dict(zip(template.__code__.co_freevars, template.__closure__ or ())) if template is not None else {}
    out = []
    for name in code.co_freevars:
        cell = cells.get(name)
        if cell is None:
            cell = existing.get(name) if name == "__class__" else None
            if cell is None:
                cell = _CellType()
        out.append(cell)
    return tuple(out)
