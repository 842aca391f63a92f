"""Bring a generated GLB into the scene: Kiln collection, 3D cursor, packed textures, provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

COLLECTION_NAME = "Kiln"
EXPRESSIONS = ("jaw_open", "smile", "blink_L", "blink_R", "brow_raise")
"""The shape keys of a rigged avatar (core/assets/rig.py), as the panel's sliders show them."""
# Custom properties kept on the imported object so an artist can regenerate or vary it.
PROP_PREFIX = "kiln_"


def object_name_from_prompt(prompt: str, max_len: int = 48) -> str:
    """``"  a woman with a  red bob "`` -> ``"a woman with a red bob"`` (trimmed to ``max_len``)."""
    name = " ".join(prompt.split())
    if len(name) > max_len:
        name = name[: max_len - 1].rstrip() + "…"
    return name or "Kiln Asset"


def kiln_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    """The scene's own ``Kiln`` collection (a child of its scene collection), created if missing.

    Each scene gets its own (``Kiln.001`` ... when the name is taken), so an import in one
    scene never shows up in another.
    """
    for coll in scene.collection.children:
        if coll.name.split(".")[0] == COLLECTION_NAME:
            return coll
    coll = bpy.data.collections.new(COLLECTION_NAME)
    scene.collection.children.link(coll)
    return coll


def _snapshot() -> dict[str, set[Any]]:
    return {
        "objects": set(bpy.data.objects),
        "meshes": set(bpy.data.meshes),
        "materials": set(bpy.data.materials),
        "images": set(bpy.data.images),
        "textures": set(bpy.data.textures),
        "actions": set(bpy.data.actions),
        "collections": set(bpy.data.collections),
        "armatures": set(bpy.data.armatures),
    }


def _remove_new(before: dict[str, set[Any]]) -> None:
    """Delete every datablock created since ``before`` (undo a failed import)."""
    for attr in (
        "objects",
        "meshes",
        "materials",
        "images",
        "textures",
        "actions",
        "collections",
        "armatures",
    ):
        data = getattr(bpy.data, attr)
        for block in set(data) - before[attr]:
            data.remove(block)


def material_images(obj: bpy.types.Object) -> list[bpy.types.Image]:
    """Images used by the image-texture nodes of the object's materials."""
    images = []
    for slot in getattr(obj, "material_slots", ()):
        mat = slot.material
        if mat is None or not mat.use_nodes:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "TEX_IMAGE" and node.image is not None and node.image not in images:
                images.append(node.image)
    return images


def expression_mesh(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The mesh with expression shape keys among ``obj``, its children and its parent, or None.

    A rigged avatar imports as an armature (the root, what the artist selects) with the mesh
    parented to it; selecting the mesh works as well.
    """
    if obj is None:
        return None
    for o in (obj, *obj.children_recursive, *([obj.parent] if obj.parent else [])):
        keys = o.data.shape_keys if o.type == "MESH" else None
        if keys is not None and any(k.name in EXPRESSIONS for k in keys.key_blocks):
            return o
    return None


def armature_of(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """The armature that deforms ``obj`` (itself when it is one), or None."""
    if obj is None:
        return None
    if obj.type == "ARMATURE":
        return obj
    for mod in getattr(obj, "modifiers", ()):
        if mod.type == "ARMATURE" and mod.object is not None:
            return mod.object
    return obj.parent if obj.parent is not None and obj.parent.type == "ARMATURE" else None


def strip_rig(root: bpy.types.Object) -> bpy.types.Object:
    """Remove the armature, vertex groups and shape keys of an imported avatar; return the new root.

    For ``--no-rig`` and the panel's rig switch: the mesh stays where it is, unrigged.
    """
    arm = armature_of(root) or next((o for o in root.children_recursive if o.type == "ARMATURE"), None)
    meshes = [o for o in (root, *root.children_recursive) if o.type == "MESH"]
    for obj in meshes:
        for mod in [m for m in obj.modifiers if m.type == "ARMATURE"]:
            obj.modifiers.remove(mod)
        obj.vertex_groups.clear()
        if obj.data.shape_keys is not None:
            obj.shape_key_clear()
    if arm is None:
        return root
    new_root = root
    for obj in meshes:
        if obj.parent == arm:
            world = obj.matrix_world.copy()
            obj.parent = arm.parent
            obj.matrix_world = world
    if arm == root:
        new_root = meshes[0] if len(meshes) == 1 else root
        if new_root != root:
            for key in list(root.keys()):
                new_root[key] = root[key]
    data = arm.data
    name = arm.name
    bpy.data.objects.remove(arm)
    if data.users == 0:
        bpy.data.armatures.remove(data)
    if new_root != root:
        new_root.name = name
    return new_root


def import_glb(
    context: bpy.types.Context,
    path: Path,
    prompt: str,
    properties: dict[str, Any] | None = None,
    location: tuple[float, float, float] | None = None,
    scene: bpy.types.Scene | None = None,
    rig: bool = True,
) -> bpy.types.Object:
    """Import ``path`` and return its root object.

    A rigged avatar's GLB (a glTF skin and morph targets) comes in as an armature named after
    the prompt, with bones root, neck, head, jaw, eye_L and eye_R, and its mesh parented to it
    with one vertex group per bone and the expression shape keys (``EXPRESSIONS``). With
    ``rig`` False the armature, vertex groups and shape keys are removed (``strip_rig``).

    ``scene`` (default: the context's) is where the Kiln collection is, e.g. the scene that
    started the job when the artist has switched scenes since.

    Steps:
        1. Check the file is a GLB, then run Blender's glTF importer.
        2. Move what it made into the ``Kiln`` collection; several roots get one empty parent.
        3. Name the root from the prompt, place it at ``location`` (default: the 3D cursor).
        4. Pack the textures into the .blend, keep prompt/seed/job id as custom properties.

    On any failure everything the import created is removed again, then the error is raised.
    """
    path = Path(path)
    # 1. Check and import.
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"glTF":
        raise ValueError(f"{path} is not a GLB file (starts with {magic!r}); the download may be damaged")
    if "gltf" not in dir(bpy.ops.import_scene):  # hasattr is always True on bpy.ops
        raise RuntimeError(
            "Blender's glTF importer is off; enable the add-on 'glTF 2.0 format' in Preferences"
        )
    scene = scene or context.scene
    before = _snapshot()
    view_layer = context.view_layer
    was_active = view_layer.objects.active
    was_selected = [o for o in view_layer.objects if o.select_get()]
    try:
        # No custom bone shape: the importer would add an "Icosphere" object to show the bones.
        props = {p.identifier for p in bpy.ops.import_scene.gltf.get_rna_type().properties}
        extra = {"disable_bone_shape": True} if "disable_bone_shape" in props else {}
        result = bpy.ops.import_scene.gltf(filepath=str(path), **extra)
        if "FINISHED" not in result:
            raise RuntimeError(f"Blender's glTF importer could not read {path}")
        new_objects = [o for o in bpy.data.objects if o not in before["objects"]]
        if not new_objects:
            raise RuntimeError(f"{path} holds no objects")

        # 2. Collect into the Kiln collection.
        coll = kiln_collection(scene)
        for obj in new_objects:
            for users in list(obj.users_collection):
                users.objects.unlink(obj)
            coll.objects.link(obj)
        roots = [o for o in new_objects if o.parent is None]
        name = object_name_from_prompt(prompt)
        if len(roots) == 1:
            root = roots[0]
        else:
            root = bpy.data.objects.new(name, None)
            coll.objects.link(root)
            for obj in roots:
                obj.parent = root

        # 3. Name and place (an unrigged import drops the armature first).
        if not rig:
            root = strip_rig(root)
            new_objects = [o for o in bpy.data.objects if o not in before["objects"]]
        root.name = name
        meshes = [o for o in new_objects if o.type == "MESH"]
        if len(meshes) == 1 and meshes[0] is not root:
            meshes[0].name = name + " Mesh"
        cursor = scene.cursor.location if location is None else location
        root.location = (
            root.location[0] + cursor[0],
            root.location[1] + cursor[1],
            root.location[2] + cursor[2],
        )

        # 4. Textures inside the .blend; provenance as custom properties.
        for obj in meshes:
            for image in material_images(obj):
                if image.packed_file is None and image.source == "FILE":
                    image.pack()
        root[PROP_PREFIX + "prompt"] = prompt
        for key, value in (properties or {}).items():
            if value is not None:
                root[PROP_PREFIX + key] = value

        # The importer selected its objects in the current view layer; keep that only when the
        # asset is in this scene, else give the artist back their selection.
        view_layer.update()
        here = scene == context.scene
        for obj in view_layer.objects:
            obj.select_set(obj == root if here else obj in was_selected)
        view_layer.objects.active = root if here else was_active
    except Exception:
        # Leave nothing half-imported; Python's own errors and bpy's RuntimeError alike.
        _remove_new(before)
        raise
    return root
