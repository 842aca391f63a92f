"""The job registry that repairs what an undo does to job entries, on stand-ins for bpy collections.

Blender's undo cannot run in the bpy module; what it does to ``Scene.kiln.jobs`` is done here by
hand (an entry removed, fields put back to an older state), then the registry repairs it.
tests/blender/test_blender_scene.py runs the same repair on real scene collections.
"""

from __future__ import annotations

from blender_addon.jobregistry import JobRegistry, fields_match, read_fields, write_fields


class Element:
    """A PropertyGroup stand-in: attributes with defaults."""

    def __init__(self, **defaults):
        self.__dict__.update(defaults)


class Collection(list):
    """A CollectionProperty stand-in: ``add()`` appends a fresh element, ``remove(i)`` deletes one."""

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def add(self):
        self.append(self.factory())
        return self[-1]

    def remove(self, index):
        del self[index]


def new_note():
    return Element(kind="", text="")


def new_job():
    return Element(
        local_id="", job_id="", state="submitting", progress=0.0, glb_path="", notes=Collection(new_note)
    )


def read(item):
    return read_fields(
        item, ("local_id", "job_id", "state", "progress", "glb_path"), {"notes": ("kind", "text")}
    )


def add_job(jobs, local_id, **fields):
    item = jobs.add()
    item.local_id = local_id
    for key, value in fields.items():
        setattr(item, key, value)
    return item


def test_an_entry_dropped_by_undo_comes_back_with_its_fields():
    scenes = {"Scene": Collection(new_job)}
    registry = JobRegistry()
    item = add_job(scenes["Scene"], "L1", job_id="J1", state="running", progress=0.5)
    item.notes.add().text = "conflict: x"
    registry.remember("Scene", read(item))
    # Undo: back to a step before the job was submitted.
    scenes["Scene"].remove(0)
    result = registry.reconcile(scenes)
    assert result.restored == ["L1"] and result.changed
    [back] = scenes["Scene"]
    assert (back.local_id, back.job_id, back.state, back.progress) == ("L1", "J1", "running", 0.5)
    assert [n.text for n in back.notes] == ["conflict: x"]
    # A second pass finds everything in place.
    assert not registry.reconcile(scenes).changed and len(scenes["Scene"]) == 1


def test_a_rolled_back_entry_is_rolled_forward_unless_only_missing_ones_are_wanted():
    scenes = {"Scene": Collection(new_job)}
    registry = JobRegistry()
    item = add_job(scenes["Scene"], "L1")
    registry.remember("Scene", read(item))
    # The timer wrote the finished job (no undo step); the registry saw it on its refresh.
    item.job_id, item.state, item.progress, item.glb_path = "J1", "succeeded", 1.0, "/out/a.glb"
    registry.refresh(scenes, read)
    # Undo restores the entry as it was at the last undo step: still submitting, no job id.
    item.job_id, item.state, item.progress, item.glb_path = "", "submitting", 0.0, ""
    assert not registry.reconcile(scenes, missing_only=True).changed
    assert item.state == "submitting"
    result = registry.reconcile(scenes)
    assert result.rolled_forward == ["L1"] and result.restored == []
    assert (item.job_id, item.state, item.progress, item.glb_path) == ("J1", "succeeded", 1.0, "/out/a.glb")


def test_forgotten_entries_stay_removed_and_other_entries_are_left_alone():
    scenes = {"Scene": Collection(new_job)}
    registry = JobRegistry()
    kept = add_job(scenes["Scene"], "L1", state="running")
    removed = add_job(scenes["Scene"], "L2", state="running")
    add_job(scenes["Scene"], "L3", state="failed")  # never followed in this session
    for item in (kept, removed):
        registry.remember("Scene", read(item))
    # The artist removes L2 (Remove Job forgets it first); redo/undo must not bring it back.
    registry.forget("L2")
    scenes["Scene"].remove(1)
    assert not registry.reconcile(scenes).changed
    assert [i.local_id for i in scenes["Scene"]] == ["L1", "L3"]
    assert "L2" not in registry and "L1" in registry and len(registry) == 1


def test_an_entry_is_found_in_any_scene_and_dropped_when_its_scene_is_gone():
    scenes = {"Scene": Collection(new_job), "Other": Collection(new_job)}
    registry = JobRegistry()
    item = add_job(scenes["Other"], "L1", state="running")
    registry.remember("Scene", read(item))  # a stale scene name: the entry is still found
    assert not registry.reconcile(scenes).changed
    assert registry.get("L1").scene == "Other"
    # The scene itself is deleted: nothing to put the entry back into, so it is forgotten.
    del scenes["Other"]
    result = registry.reconcile(scenes)
    assert result.dropped == ["L1"] and not result.changed and "L1" not in registry
    assert list(scenes["Scene"]) == []


def test_field_helpers_round_trip_collections():
    a, b = new_job(), new_job()
    a.local_id, a.state = "L", "running"
    a.notes.add().text = "one"
    a.notes.add().text = "two"
    fields = read(a)
    assert fields["notes"] == [{"kind": "", "text": "one"}, {"kind": "", "text": "two"}]
    assert not fields_match(b, fields)
    b.notes.add().text = "stale"
    write_fields(b, fields)
    assert fields_match(b, fields) and [n.text for n in b.notes] == ["one", "two"]
    b.notes[1].text = "changed"
    assert not fields_match(b, fields)
