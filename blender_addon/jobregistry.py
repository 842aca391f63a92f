"""The jobs this Blender session follows, kept outside bpy data so undo cannot lose them; free of bpy.

Job entries live in ``Scene.kiln.jobs`` so that they are saved in the .blend. Blender's undo
puts all bpy data back to the last undo step, and the entries the add-on writes between steps
(the Generate button pushes no step, the UI timer applies progress and imports results without
one) are not in it: a Ctrl-Z could drop a job's entry, or roll it back from "succeeded" to
"submitting", while the job goes on on the server. So the runtime keeps a plain copy of every
entry it follows here, refreshed from the scene (before each undo, on every timer tick), and
`JobRegistry.reconcile` writes back the entries an undo removed or rolled back.

An entry the artist removes (Remove Job) is forgotten first, so undo/redo never fights them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Fields = dict[str, Any]
"""An entry as plain data: property name -> value; a collection is a list of such dicts."""


@dataclass
class JobRecord:
    """The last known state of one job entry."""

    local_id: str
    scene: str
    """Name of the scene whose job list holds the entry."""
    fields: Fields


@dataclass
class Reconciled:
    """What `JobRegistry.reconcile` changed, by local id."""

    restored: list[str] = field(default_factory=list)
    """Entries that were missing and were added back."""
    rolled_forward: list[str] = field(default_factory=list)
    """Entries that were there with older fields, which were written back."""
    dropped: list[str] = field(default_factory=list)
    """Entries whose scene is gone: forgotten (their jobs should be left alone)."""

    @property
    def changed(self) -> bool:
        return bool(self.restored or self.rolled_forward)


def read_fields(
    item: Any, names: Iterable[str], collections: Mapping[str, Iterable[str]] | None = None
) -> Fields:
    """Copy ``names`` of ``item`` and, for each collection, the listed fields of its elements."""
    out: Fields = {name: getattr(item, name) for name in names}
    for name, sub in (collections or {}).items():
        out[name] = [{k: getattr(element, k) for k in sub} for element in getattr(item, name)]
    return out


def write_fields(item: Any, fields: Fields) -> None:
    """Set ``fields`` on ``item``; a list value refills the collection of that name (``clear``/``add``)."""
    for name, value in fields.items():
        if isinstance(value, list):
            collection = getattr(item, name)
            collection.clear()
            for element in value:
                new = collection.add()
                for key, sub in element.items():
                    setattr(new, key, sub)
        else:
            setattr(item, name, value)


def fields_match(item: Any, fields: Fields) -> bool:
    """True when ``item`` holds exactly ``fields`` (collections compared element by element)."""
    for name, value in fields.items():
        current = getattr(item, name)
        if isinstance(value, list):
            if len(current) != len(value):
                return False
            for element, want in zip(current, value, strict=True):
                if any(getattr(element, k) != v for k, v in want.items()):
                    return False
        elif current != value:
            return False
    return True


class JobRegistry:
    """Job entries by local id, as the add-on last wrote or saw them. Main thread only."""

    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}

    def __contains__(self, local_id: object) -> bool:
        return local_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, local_id: str) -> JobRecord | None:
        return self._records.get(local_id)

    def remember(self, scene: str, fields: Fields) -> None:
        """Keep ``fields`` (which hold the entry's ``local_id``) as the entry's latest state."""
        local_id = str(fields["local_id"])
        self._records[local_id] = JobRecord(local_id, scene, dict(fields))

    def forget(self, local_id: str) -> None:
        self._records.pop(local_id, None)

    def clear(self) -> None:
        self._records.clear()

    def refresh(self, job_lists: Mapping[str, Iterable[Any]], read: Callable[[Any], Fields]) -> None:
        """Copy the current state of every remembered entry that is present (e.g. before an undo)."""
        where = _locate(job_lists)
        for local_id, record in self._records.items():
            if local_id in where:
                scene, item = where[local_id]
                record.scene, record.fields = scene, read(item)

    def reconcile(self, job_lists: Mapping[str, Any], missing_only: bool = False) -> Reconciled:
        """Put back what an undo took away from the remembered entries.

        Args:
            job_lists: scene name -> that scene's job collection (``Scene.kiln.jobs``).
            missing_only: only add back missing entries; leave present ones as they are (the
                timer's check, which must not undo changes made since the last refresh).

        Steps, per remembered entry:
            1. Present in some scene's list: if its fields differ from the record, write the
               record back (``rolled_forward``), unless ``missing_only``.
            2. Missing, and its scene is still there: add a new entry with the record's fields
               (``restored``).
            3. Missing with its scene gone: forget it (``dropped``).
        """
        result = Reconciled()
        where = _locate(job_lists)
        for local_id, record in list(self._records.items()):
            if local_id in where:
                scene, item = where[local_id]
                record.scene = scene
                if not missing_only and not fields_match(item, record.fields):
                    write_fields(item, record.fields)
                    result.rolled_forward.append(local_id)
                continue
            jobs = job_lists.get(record.scene)
            if jobs is None:
                self.forget(local_id)
                result.dropped.append(local_id)
                continue
            write_fields(jobs.add(), record.fields)
            result.restored.append(local_id)
        return result


def _locate(job_lists: Mapping[str, Iterable[Any]]) -> dict[str, tuple[str, Any]]:
    """local id -> (scene name, entry) over every scene's job list."""
    where: dict[str, tuple[str, Any]] = {}
    for scene, jobs in job_lists.items():
        for item in jobs:
            where.setdefault(str(item.local_id), (scene, item))
    return where
