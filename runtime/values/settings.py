"""Process-wide settings of snapshot and restore: signing keys and decoding limits (``runtime.configure``).

The keys start from the environment, so that every command and every library user in a process
signs and verifies alike: ``DURABLE_SIGNING_KEY`` (the key that signs, and verifies) and
``DURABLE_ACCEPTED_KEYS`` (older keys that still verify, separated by commas).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..errors import SignatureError

_UNSET: object = object()

ENV_KEY = "DURABLE_SIGNING_KEY"
ENV_ACCEPTED = "DURABLE_ACCEPTED_KEYS"


@dataclass(frozen=True)
class Settings:
    """What ``snapshot`` and ``restore`` use; change it with ``configure``.

    * ``signing_key``: when set, ``snapshot`` signs every snapshot (HMAC-SHA256).
    * ``accepted_keys``: older keys ``restore`` still accepts (for key rotation).
    * With either set, ``restore`` refuses snapshots that are unsigned or whose signature matches
      none of the keys (a process may verify without signing: ``accepted_keys`` alone).
    * ``max_bytes``: the largest snapshot or value ``restore`` reads (8 MiB). Decoding costs at most
      about 200 bytes of memory and 2 µs per input byte, so this bounds what one input can take.
    * ``max_depth``: the deepest nesting of containers ``restore`` decodes.
    * ``max_length``: the most items in one container, or bytes in one str or bytes value.
    * ``problem``: why the keys in the environment are unusable (then signing and verifying fail
      with ``SignatureError`` rather than silently run unsigned).
    """

    signing_key: bytes | None = None
    accepted_keys: tuple[bytes, ...] = ()
    max_bytes: int = 8 * 1024 * 1024
    max_depth: int = 1000
    max_length: int = 64 * 1024 * 1024
    problem: str | None = None

    @property
    def verify_keys(self) -> tuple[bytes, ...]:
        """The keys a signature must match; empty when nothing needs verifying."""
        self.check()
        if self.signing_key is not None:
            return (self.signing_key, *self.accepted_keys)
        return self.accepted_keys

    @property
    def key(self) -> bytes | None:
        """The key that signs, or None (raises ``SignatureError`` when the environment's is unusable)."""
        self.check()
        return self.signing_key

    def check(self) -> None:
        if self.problem is not None:
            raise SignatureError(self.problem)


def from_environment(environ: dict[str, str] | os._Environ[str] = os.environ) -> Settings:
    """The settings the environment asks for (keys only; the limits keep their defaults)."""
    key = environ.get(ENV_KEY) or None
    accepted = [k for k in (environ.get(ENV_ACCEPTED) or "").split(",") if k]
    try:
        return Settings(signing_key=_key(key) if key is not None else None,
                        accepted_keys=tuple(_key(k) for k in accepted))
    except ValueError as exc:
        return Settings(problem=f"{ENV_KEY}/{ENV_ACCEPTED}: {exc}; nothing is signed or verified until it is fixed")



def configure(*, signing_key: bytes | str | None | object = _UNSET, accepted_keys: object = _UNSET,
              max_bytes: object = _UNSET, max_depth: object = _UNSET, max_length: object = _UNSET) -> Settings:
    """Change the settings named (the others keep their values); returns the previous settings.

    A ``str`` key is UTF-8 encoded. ``signing_key=None`` turns signing off.
    """
    global current
    previous = current
    changes: dict[str, object] = {}
    if signing_key is not _UNSET or accepted_keys is not _UNSET:
        changes["problem"] = None  # keys set explicitly replace the environment's, usable or not
    if signing_key is not _UNSET:
        changes["signing_key"] = _key(signing_key) if signing_key is not None else None
    if accepted_keys is not _UNSET:
        if not isinstance(accepted_keys, (list, tuple)):
            raise TypeError("accepted_keys must be a list or tuple of keys")
        changes["accepted_keys"] = tuple(_key(k) for k in accepted_keys)
    for name, value in (("max_bytes", max_bytes), ("max_depth", max_depth), ("max_length", max_length)):
        if value is not _UNSET:
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
            changes[name] = value
    current = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    return previous


def restore_settings(settings: Settings) -> None:
    """Put back settings that ``configure`` returned."""
    global current
    if not isinstance(settings, Settings):
        raise TypeError("restore_settings() needs a Settings object returned by configure()")
    current = settings


def _key(key: object) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
        raise ValueError("a signing key must be bytes (or str) of at least 16 bytes")
    return bytes(key)


current = from_environment()
