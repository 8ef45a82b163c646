"""What a simulation is told to do: signals to send and when, fakes for steps, failures to inject."""
from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..programs import program_names
from .errors import InjectedFailure, SimulationError
from .spies import spy


@dataclass(frozen=True)
class Signal:
    """A scripted signal: ``payload`` for ``name``, sent ``at`` seconds of virtual time after the run starts,
    or (``at`` None) as soon as the program waits for it."""

    name: str
    payload: Any = None
    at: float | None = None


def signals_of(script: Any) -> tuple[Signal, ...]:
    """The scripted signals ``signals=`` describes: Signal objects, ``(name, payload)`` or ``(name, payload,
    at)`` tuples, or a mapping of name to payload (a list of payloads: one signal each, in order)."""
    if script is None:
        return ()
    if isinstance(script, Mapping):
        items: list[Any] = []
        for name, payload in script.items():
            items.extend((name, p) for p in payload) if isinstance(payload, list) else items.append((name, payload))
        script = items
    found: list[Signal] = []
    for item in script:
        if isinstance(item, Signal):
            signal = item
        elif isinstance(item, tuple) and len(item) in (2, 3):
            signal = Signal(*item)
        else:
            raise SimulationError(f"signals=: {item!r} is not a Signal, a (name, payload) or a (name, payload, at) "
                                  "tuple")
        if not isinstance(signal.name, str) or not signal.name:
            raise SimulationError(f"signals=: a signal needs a name (a non-empty str), not {signal.name!r}")
        if signal.at is not None and (isinstance(signal.at, bool) or not isinstance(signal.at, (int, float))
                                      or signal.at < 0):
            raise SimulationError(f"signals=: the time of signal {signal.name!r} must be seconds from the start "
                                  f"(a number >= 0), not {signal.at!r}")
        found.append(signal)
    return tuple(found)


def step_key(key: Any, program: Callable[..., Any], what: str) -> str:
    """The ``module:qualname`` a key of ``steps=`` or ``failures=`` names: a step function itself, its
    ``module:qualname``, or a name the program's module binds to a function."""
    if isinstance(key, str):
        if ":" in key:
            try:
                program_names.split(key, f"{what} key")
            except program_names.NameError_ as exc:
                raise SimulationError(str(exc)) from None
            return key
        found = getattr(program, "__globals__", {}).get(key)
        if not isinstance(found, (types.FunctionType, types.BuiltinFunctionType)):
            module = getattr(program, "__module__", "?")
            raise SimulationError(f"{what}: no step function named {key!r}: module {module!r} of the program binds "
                                  f"no function to that name (name the function itself, or its 'module:qualname')")
        key = found
    if not callable(key):
        raise SimulationError(f"{what}: {key!r} is not a step function (use the function, its 'module:qualname' or "
                              "its name in the program's module)")
    try:
        return program_names.step_ref(key)
    except TypeError as exc:
        raise SimulationError(f"{what}: {exc}") from None


def fakes_of(steps: Mapping[Any, Callable[..., Any]] | None, program: Callable[..., Any]) -> dict[str, Any]:
    """``steps=`` as ``{module:qualname: spy}``: each fake wrapped in a spy so its calls are counted."""
    fakes: dict[str, Any] = {}
    for key, fake in (steps or {}).items():
        ref = step_key(key, program, "steps=")
        if not callable(fake):
            raise SimulationError(f"steps=: the fake for {ref} must be callable, not {fake!r}")
        fakes[ref] = fake if hasattr(fake, "calls") else spy(fake, name=ref.rpartition(":")[2])
    return fakes




def failures_of(failures: Mapping[Any, Any] | None, program: Callable[..., Any]) -> dict[str, dict[int, Any]]:
    """``failures=`` as ``{module:qualname: {attempt: exception}}``. Per step function: an int n (its first n
    attempts of every call raise InjectedFailure), attempt numbers (those raise), or a mapping of attempt
    number to the exception (or exception class) to raise."""
    found: dict[str, dict[int, Any]] = {}
    for key, spec in (failures or {}).items():
        ref = step_key(key, program, "failures=")
        if isinstance(spec, bool):
            spec = None
        if isinstance(spec, int):
            attempts: dict[int, Any] = {n: None for n in range(1, spec + 1)}
        elif isinstance(spec, Mapping):
            attempts = dict(spec)
        elif isinstance(spec, Iterable) and not isinstance(spec, (str, bytes)):
            attempts = {n: None for n in spec}
        else:
            raise SimulationError(f"failures=: for {ref}, give how many first attempts fail (an int), which attempts "
                                  f"fail (numbers) or {{attempt: exception}}, not {spec!r}")
        for attempt, error in attempts.items():
            if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
                raise SimulationError(f"failures=: attempts are numbered from 1, not {attempt!r} (for {ref})")
            if error is not None and not (isinstance(error, BaseException)
                                          or isinstance(error, type) and issubclass(error, BaseException)):
                raise SimulationError(f"failures=: attempt {attempt} of {ref} must raise an exception, not {error!r}")
        found[ref] = attempts
    return found


def injected(ref: str, attempt: int, error: Any) -> BaseException:
    """The exception an injected failure raises (a fresh one each time)."""
    if error is None:
        return InjectedFailure(f"injected failure of step {ref}, attempt {attempt}")
    if isinstance(error, type):
        return error(f"injected failure of step {ref}, attempt {attempt}")
    return error
