"""Process-wide settings of snapshot and restore: signing keys and decoding limits (``runtime.configure``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

_UNSET: object = object()


@dataclass(frozen=True)
class Settings:
    """What ``snapshot`` and ``restore`` use; change it with ``configure``.

    * ``signing_key``: when set, ``snapshot`` signs every snapshot (HMAC-SHA256) and ``restore``
      refuses snapshots that are unsigned or whose signature does not match.
    * ``accepted_keys``: older keys ``restore`` still accepts (for key rotation).
    * ``max_bytes``: the largest snapshot ``restore`` reads.
    * ``max_depth``: the deepest nesting of containers ``restore`` decodes.
    * ``max_length``: the most items in one container, or bytes in one str or bytes value.
    """

    signing_key: bytes | None = None
    accepted_keys: tuple[bytes, ...] = ()
    max_bytes: int = 256 * 1024 * 1024
    max_depth: int = 1000
    max_length: int = 64 * 1024 * 1024

    @property
    def verify_keys(self) -> tuple[bytes, ...]:
        return (self.signing_key, *self.accepted_keys) if self.signing_key is not None else ()


current = Settings()


def configure(*, signing_key: bytes | str | None | object = _UNSET, accepted_keys: object = _UNSET,
              max_bytes: object = _UNSET, max_depth: object = _UNSET, max_length: object = _UNSET) -> Settings:
    """Change the settings named (the others keep their values); returns the previous settings.

    A ``str`` key is UTF-8 encoded. ``signing_key=None`` turns signing off.
    """
    global current
    previous = current
    changes: dict[str, object] = {}
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
