"""The typed errors of snapshot and restore: one base class, one subclass per kind of failure."""
from __future__ import annotations


class SnapshotError(Exception):
    """Base of every snapshot/restore failure."""


class NotDurableError(SnapshotError):
    """The generator was not produced by a compiled durable function."""


class GeneratorStateError(SnapshotError):
    """The generator is running or finished, so it has no suspended state to capture."""


class UnserializableValueError(SnapshotError):
    """A live value cannot be carried by a snapshot.

    ``path`` is the chain of steps from the frame local to the offending value
    (for example ``["local 'client'", "[3]", "['k']"]``); ``type_name`` is the
    qualified name of the offending value's type.
    """

    def __init__(self, message: str, *, path: list[str] | None = None, type_name: str = "") -> None:
        super().__init__(message)
        self.path = list(path or [])
        self.type_name = type_name


class IncompatibleCodeError(SnapshotError):
    """The snapshot names a function that is gone or whose code changed since it was taken."""


class NotAllowedError(SnapshotError):
    """The snapshot names a module, class or function that restore is not allowed to use.

    Restore resolves names only in compiled modules, ``@serializable`` classes and modules given
    to ``runtime.allow_modules``; it never imports or calls anything else a snapshot asks for.
    """


class SignatureError(SnapshotError):
    """Restore with a signing key met a snapshot that is unsigned or whose signature does not match."""


class CorruptSnapshotError(SnapshotError):
    """The bytes are not a snapshot this runtime can read: truncated, damaged, foreign or too new."""


class SnapshotFormatTooNewError(CorruptSnapshotError):
    """The snapshot was written by a newer runtime (a higher format): this one cannot read it, a newer one
    can. A worker leaves such a run as it is instead of failing it (a rolling deploy has both)."""


class DurableCompileError(Exception):
    """A function marked ``@durable`` is not compiled and cannot be compiled here."""
