"""Fields: objects that answer surface value and albedo at 3D points."""

from core.fields.base import Field, FieldKind

__all__ = ["Field", "FieldKind"]
