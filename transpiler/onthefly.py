"""On-the-fly compilation: ``@durable`` on a function whose module was not compiled ahead of time."""
from __future__ import annotations

import inspect
import itertools
import re
import types
from typing import Any, Callable

from runtime.errors import DurableCompileError

from .diagnostics import AsyncNotSupported, CompileError, CoroutineDecorator
from .generate import TARGET, compile_module_mapped
from .linemap import compile_mapped

_counter = itertools.count(1)
_DECORATOR = re.compile(r"^\s*@")
_DOTTED_DECORATOR = re.compile(r"^(\s*)@\s*([A-Za-z_][\w.]*)\s*(?:#.*)?$")


def _scope_of(qualname: str) -> tuple[tuple[str, str], ...]:
    parts = qualname.split(".")[:-1]
    scope: list[tuple[str, str]] = []
    for i, part in enumerate(parts):
        if part == "<locals>":
            continue
        kind = "def" if i + 1 < len(parts) and parts[i + 1] == "<locals>" else "class"
        scope.append((kind, part))
    return tuple(scope)


_MISSING = object()


def _is_coroutine_decorator(dotted: str, namespace: dict[str, Any]) -> bool:
    """Whether a decorator's dotted name leads, through modules only, to ``types.coroutine`` or
    ``asyncio.coroutine`` (the decorators already ran: their names are bound)."""
    head, *rest = dotted.split(".")
    obj = namespace.get(head, _MISSING)
    for part in rest:
        obj = getattr(obj, part, _MISSING) if isinstance(obj, types.ModuleType) else _MISSING
    if obj is types.coroutine:
        return True
    return obj is not _MISSING and getattr(obj, "__module__", None) == "asyncio.coroutines" \
        and getattr(obj, "__name__", None) == "coroutine"


def _refuse_coroutine(fn: types.FunctionType, decorators: list[str], path: str, first: int) -> None:
    """DG007: ``types.coroutine`` below ``@durable`` (it ran already: the code is flagged) or above it
    (it would replace the compiled function's code afterwards)."""
    for index, text in enumerate(decorators):
        match = _DOTTED_DECORATOR.match(text)
        if match and _is_coroutine_decorator(match.group(2), fn.__globals__):
            detail = f"@{match.group(2)} on @durable function {fn.__name__!r}"
            raise DurableCompileError(CoroutineDecorator(path, first + index, len(match.group(1)) + 1, detail).text())
    if fn.__code__.co_flags & inspect.CO_ITERABLE_COROUTINE:
        detail = f"@types.coroutine on @durable function {fn.__name__!r}"
        raise DurableCompileError(CoroutineDecorator(path, first + len(decorators), 1, detail).text())


def compile_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compile one function from its source file and return the compiled function, which shares
    the original's globals, closure cells, defaults and metadata."""
    if not isinstance(fn, types.FunctionType):
        raise DurableCompileError(f"@durable needs a generator or coroutine function, not {type(fn).__name__!r}")
    if inspect.isasyncgenfunction(fn):
        raise DurableCompileError(f"@durable async generators are not supported yet: {fn.__qualname__!r} "
                                  f"(hint: {AsyncNotSupported.hint})")
    if not (inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn)):
        raise DurableCompileError(f"@durable function {fn.__qualname__!r} is not a generator function (no yield) "
                                  "or a coroutine function (async def)")
    try:
        lines, first = inspect.getsourcelines(fn)
        path = inspect.getsourcefile(fn) or fn.__code__.co_filename
    except (OSError, TypeError) as exc:
        raise DurableCompileError(
            f"cannot compile @durable function {fn.__qualname__!r} on the fly: its source is unavailable ({exc}); "
            "compile its module ahead of time with `durable compile` or the import hook") from None
    # Decorators were applied already (they are running now): blank them out, keeping line numbers.
    body_start = 0
    while body_start < len(lines) and not lines[body_start].lstrip().startswith(("def ", "async def ")):
        body_start += 1
    indent = lines[body_start][: len(lines[body_start]) - len(lines[body_start].lstrip())]
    _refuse_coroutine(fn, lines[:body_start], path, first)
    frees = fn.__code__.co_freevars
    tag = f"_fly{next(_counter)}_"
    factory = f"{TARGET}{tag}factory"
    wrapped = bool(indent)
    # Every line keeps its original number (the decorators are blanked out, the first one marks the
    # function), so tracebacks, co_firstlineno and the line table need no offset.
    text_lines = [f"{indent}@{TARGET}\n", *(["\n"] * (body_start - 1)), *lines[body_start:]] if body_start \
        else [f"{indent}@{TARGET}\n", *lines]
    if not body_start:
        first -= 1
    if wrapped:
        text_lines = [f"def {factory}({', '.join(frees)}):\n", *text_lines, f"{indent}return {fn.__name__}\n"]
    text_lines = ["\n"] * max(first - 1 - (1 if wrapped else 0), 0) + text_lines
    source = "".join(text_lines)
    try:
        compiled = compile_module_mapped(source, path, meta_prefix=tag, scope=_scope_of(fn.__qualname__))
    except CompileError as exc:
        raise DurableCompileError(str(exc)) from None
    namespace = fn.__globals__
    exec(compile_mapped(compiled.code, path, compiled.lines), namespace)
    if wrapped:
        maker = namespace.pop(factory)
        made = maker(*([None] * len(frees)))
    else:
        made = namespace[fn.__name__]
    cells = dict(zip(frees, fn.__closure__ or ()))
    result = types.FunctionType(made.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                tuple(cells[name] for name in made.__code__.co_freevars))
    result.__kwdefaults__ = fn.__kwdefaults__
    result.__dict__.update(fn.__dict__)
    result.__dict__.update(made.__dict__)
    for attr in ("__qualname__", "__doc__", "__module__", "__annotations__"):
        setattr(result, attr, getattr(fn, attr))
    meta = made.__durable__
    from runtime import registry
    registry.attach(meta, result)
    return result
