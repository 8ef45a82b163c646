"""A canonical text of ``ast`` nodes that is the same on every supported Python version, and its hash."""
from __future__ import annotations

import ast
import hashlib

# Fields that carry no meaning for identity, or that only some Python versions have.
_SKIPPED = frozenset({"ctx", "type_comment", "kind", "type_params"})
_CONSTANT_TYPES = (str, bytes, bool, int, float, complex, type(None), type(Ellipsis))


def canonical(node: ast.AST) -> str:
    """The node's type and fields, recursively: positions, ``ctx``, ``type_comment``, a constant's
    ``kind`` and ``type_params`` are left out, and a field that is missing, ``None`` or empty is left
    out alike, so the same source gives the same text on CPython 3.10 to 3.13."""
    out: list[str] = []
    _render(node, out)
    return "".join(out)


def digest(*parts: str) -> str:
    """A 16 hex digit blake2b hash of the parts (each length-prefixed, so no two lists collide)."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


def _render(value: object, out: list[str]) -> None:
    if isinstance(value, ast.AST):
        out.append(type(value).__name__)
        out.append("(")
        first = True
        for name in sorted(value._fields):
            if name in _SKIPPED:
                continue
            field = getattr(value, name, None)
            if isinstance(value, ast.JoinedStr) and name == "values":
                field = _joined(field or [])
            if field is None or (isinstance(field, list) and not field) or _empty_spec(value, name, field):
                continue
            if not first:
                out.append(",")
            first = False
            out.append(name)
            out.append("=")
            if isinstance(value, ast.Constant) and name == "value":
                _constant(field, out)
            else:
                _render(field, out)
        out.append(")")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _render(item, out)
        out.append("]")
    elif isinstance(value, _CONSTANT_TYPES):  # identifiers, operator-free plain fields (level, conversion, ...)
        _constant(value, out)
    else:
        raise TypeError(f"cannot render {type(value).__name__} in an ast node")


def _constant(value: object, out: list[str]) -> None:
    if isinstance(value, (tuple, frozenset)):  # only made by optimizers, never by the parser
        items = sorted(value, key=repr) if isinstance(value, frozenset) else list(value)
        out.append(f"{type(value).__name__}:(")
        for i, item in enumerate(items):
            if i:
                out.append(",")
            _constant(item, out)
        out.append(")")
    elif isinstance(value, _CONSTANT_TYPES):
        out.append(f"{type(value).__name__}:{value!r}")
    else:
        raise TypeError(f"cannot render a constant of type {type(value).__name__}")


def _joined(values: list[ast.expr]) -> list[ast.expr]:
    """An f-string's parts with adjacent literal parts merged and empty ones dropped: 3.12 splits an
    implicitly concatenated f-string's literal text where earlier versions join it."""
    merged: list[ast.expr] = []
    for part in values:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            if not part.value:
                continue
            if merged and isinstance(merged[-1], ast.Constant) and isinstance(merged[-1].value, str):
                merged[-1] = ast.Constant(value=merged[-1].value + part.value)
                continue
        merged.append(part)
    return merged


def _empty_spec(node: ast.AST, name: str, field: object) -> bool:
    """An empty format spec (``f"{x:}"``): some versions give an empty ``JoinedStr``, others none."""
    return (isinstance(node, ast.FormattedValue) and name == "format_spec" and isinstance(field, ast.JoinedStr)
            and not _joined(field.values))
