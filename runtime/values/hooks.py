"""The encoder's and decoder's view of values beyond plain data: value kinds, allowed classes and names."""
from __future__ import annotations

from ..errors import CorruptSnapshotError
from . import allow, objects


class StandardHooks:
    """Encode and decode hooks (``wire.EncodeHooks``, ``wire.DecodeHooks``) backed by the value kinds
    (``kinds``, ``objects``) and the allow rules (``allow``). Durable generators held in values are a
    kind the snapshot engine registers."""

    def class_ref(self, cls: type) -> str | None:
        return allow.ref_of(cls)

    def custom(self, obj: object) -> tuple[str, object, object] | None:
        return objects.classify(obj)

    def find_global(self, obj: object) -> tuple[str, str] | None:
        return allow.find_global(obj)

    def plain_instances(self, cls: type) -> bool:
        return objects.plain_instances(cls)

    def plain_layout(self, layout: object) -> tuple[type, tuple[str, ...]] | None:
        return objects.plain_layout(layout)

    def finished(self) -> None:
        objects.forget_local_classes()

    def resolve_class(self, ref: str) -> type:
        obj = allow.resolve(ref, "class")
        if not isinstance(obj, type):
            raise CorruptSnapshotError(f"snapshot names {ref!r} as a class, but it is not one")
        return obj

    def create(self, name: str, head: object) -> object:
        return objects.create(name, head)

    def fill(self, name: str, obj: object, head: object, body: object) -> None:
        objects.fill(name, obj, head, body)


HOOKS = StandardHooks()
