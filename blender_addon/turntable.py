"""Turntable video of one object: a camera orbiting it in its own scene, MP4 out, back into the VSE.

The rig lives in a separate scene ("Kiln Turntable") that links the object, so the artist's scene
keeps its camera, lights, world and render settings. Works on Blender 4.2 to 5.2: the video
output sets ``media_type`` first where it exists (5.0), the VSE uses ``strips`` where it exists
(``sequences`` before 4.4), and keyframes are read through the action's slot (slotted actions).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector

TURNTABLE_SCENE = "Kiln Turntable"
RIG_PREFIX = "Kiln Turntable "


@dataclass
class TurntableOptions:
    """How the turntable looks and renders."""

    frames: int = 48
    """Frames of one full turn; frame N+1 would equal frame 1, so the video loops seamlessly."""
    size: int = 512
    """Square video edge in pixels (rounded up to even: H.264 needs even sizes)."""
    samples: int = 16
    """Render samples per pixel."""
    engine: str = "CYCLES"
    """"CYCLES" (CPU, works headless everywhere) or "EEVEE" (needs an OpenGL/EGL stack)."""
    fps: int = 24
    """Frames per second of the video."""
    elevation_deg: float = 15.0
    """Camera height above the object's centre, as an angle."""
    margin: float = 1.15
    """Free space around the object in the frame (1 = touching the edges)."""
    expressions: bool = False
    """Play a short expression cycle (blink, smile, jaw) during the turn, on an avatar with the
    expression shape keys; other objects turn as usual."""


EXPRESSION_CYCLE: tuple[tuple[str, float, float], ...] = (
    ("blink_L", 0.08, 0.22),
    ("blink_R", 0.08, 0.22),
    ("smile", 0.30, 0.60),
    ("jaw_open", 0.62, 0.92),
)
"""(shape key, start, end) as fractions of the turn: each rises to 1 halfway and falls back."""
EXPRESSION_ACTION = RIG_PREFIX + "Expressions"


def eevee_engine_id() -> str:
    """``BLENDER_EEVEE_NEXT`` on 4.2-4.5, ``BLENDER_EEVEE`` before and on 5.0."""
    ids = {item.identifier for item in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items}
    return "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in ids else "BLENDER_EEVEE"


def scene_strips(scene: bpy.types.Scene, create: bool = False):
    """The scene's top-level VSE strips (``strips`` on 4.4+, ``sequences`` before), or None."""
    sed = scene.sequence_editor
    if sed is None:
        if not create:
            return None
        sed = scene.sequence_editor_create()
    return sed.strips if hasattr(sed, "strips") else sed.sequences


def action_fcurves(id_data: bpy.types.ID):
    """The F-curves animating ``id_data``: through its action slot on 4.4+ (slotted actions)."""
    anim = id_data.animation_data
    if anim is None or anim.action is None:
        return []
    action, slot = anim.action, getattr(anim, "action_slot", None)
    if slot is not None and len(getattr(action, "layers", ())) > 0:
        from bpy_extras import anim_utils

        bag = anim_utils.action_get_channelbag_for_slot(action, slot)
        return bag.fcurves if bag is not None else []
    return action.fcurves


def world_bounds(obj: bpy.types.Object) -> tuple[Vector, float]:
    """Centre (of the world bounding box) and radius (farthest vertex from it) of ``obj`` and its children.

    The radius comes from the vertices, not the box corners, which would overestimate a round
    object by up to sqrt(3) and leave it small in the frame. Non-mesh geometry uses its box.
    """
    chunks = []
    for o in (obj, *obj.children_recursive):
        if o.type == "MESH" and len(o.data.vertices):
            co = np.empty(len(o.data.vertices) * 3, np.float32)
            o.data.vertices.foreach_get("co", co)
            m = np.array(o.matrix_world, np.float64)
            chunks.append(co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3])
        elif o.type in {"CURVE", "SURFACE", "META", "FONT"}:
            chunks.append(np.array([tuple(o.matrix_world @ Vector(c)) for c in o.bound_box], np.float64))
    if not chunks:
        return obj.matrix_world.translation.copy(), 1.0
    points = np.concatenate(chunks)
    centre = (points.min(0) + points.max(0)) / 2
    radius = float(np.linalg.norm(points - centre, axis=1).max())
    return Vector(centre.tolist()), max(radius, 1e-3)


def _find_expression_keys(obj: bpy.types.Object):
    """The shape keys (``Key`` datablock) of the avatar mesh in ``obj``'s hierarchy, or None."""
    names = {name for name, _, _ in EXPRESSION_CYCLE}
    for o in (obj, *obj.children_recursive):
        keys = o.data.shape_keys if o.type == "MESH" else None
        if keys is not None and names & {k.name for k in keys.key_blocks}:
            return keys
    return None


def add_expression_cycle(obj: bpy.types.Object, frames: int) -> list[str]:
    """Key the expression cycle over frames 1..``frames`` on ``obj``'s avatar mesh; returns the
    shape keys animated (none for an object without them). The keys live in their own action
    (``EXPRESSION_ACTION``), removed again with the turntable scene; the avatar's own shape-key
    action, if any, is put back then."""
    keys = _find_expression_keys(obj)
    if keys is None:
        return []
    anim = keys.animation_data or keys.animation_data_create()
    if anim.action is not None and anim.action.name != EXPRESSION_ACTION:
        keys["kiln_saved_action"] = anim.action.name
    anim.action = bpy.data.actions.new(EXPRESSION_ACTION)
    done = []
    for name, start, end in EXPRESSION_CYCLE:
        block = keys.key_blocks.get(name)
        if block is None:
            continue
        # Whole frames, at least two apart, so the peak is a frame the video shows even in a
        # short turntable.
        a = max(1, math.floor(1 + start * (frames - 1)))
        b = min(max(frames, 3), max(math.ceil(1 + end * (frames - 1)), a + 2))
        a = min(a, b - 2)
        keys_at = {1: 0.0, a: 0.0, (a + b) // 2: 1.0, b: 0.0}
        for frame, value in sorted(keys_at.items()):
            block.value = value
            block.keyframe_insert("value", frame=frame)
        block.value = 0.0
        done.append(name)
    return done


def _remove_expression_cycle() -> None:
    action = bpy.data.actions.get(EXPRESSION_ACTION)
    if action is None:
        return
    for keys in bpy.data.shape_keys:
        anim = keys.animation_data
        if anim is not None and anim.action == action:
            saved = keys.get("kiln_saved_action")
            anim.action = bpy.data.actions.get(saved) if saved else None
            if saved:
                del keys["kiln_saved_action"]
            for block in keys.key_blocks:
                if block.name in {n for n, _, _ in EXPRESSION_CYCLE}:
                    block.value = 0.0
    bpy.data.actions.remove(action)


def _clear_turntable_scene() -> None:
    _remove_expression_cycle()
    old = bpy.data.scenes.get(TURNTABLE_SCENE)
    if old is None:
        return
    for obj in list(old.collection.objects):
        if obj.name.startswith(RIG_PREFIX):
            data = obj.data
            bpy.data.objects.remove(obj)
            if data is not None and data.users == 0:
                (bpy.data.cameras if isinstance(data, bpy.types.Camera) else bpy.data.lights).remove(data)
    world = old.world
    bpy.data.scenes.remove(old)
    if world is not None and world.users == 0:
        bpy.data.worlds.remove(world)


def build_turntable_scene(obj: bpy.types.Object, options: TurntableOptions) -> bpy.types.Scene:
    """Make (or remake) the turntable scene around ``obj`` and return it.

    Steps:
        1. A fresh scene linking ``obj`` and its children.
        2. A pivot empty at the object's centre, turning 360 degrees over ``frames`` with linear
           keys at frame 1 (0) and frame N+1 (2 pi), so frame N+1 == frame 1: a seamless loop.
        3. A camera on the pivot, far enough for the bounding sphere to fit, aimed at the pivot.
        4. A key sun light on the pivot (lighting turns with the camera) and a grey world.
        5. Render settings: engine, samples, size, frame range, H.264 MP4 output.
        6. With ``options.expressions``: the avatar blinks, smiles and opens its jaw on the way.
    """
    # 1. Scene.
    _clear_turntable_scene()
    scene = bpy.data.scenes.new(TURNTABLE_SCENE)
    for o in (obj, *obj.children_recursive):
        scene.collection.objects.link(o)
    bpy.context.view_layer.update()
    centre, radius = world_bounds(obj)

    # 2. Pivot with a linear full turn.
    frames = max(int(options.frames), 2)
    pivot = bpy.data.objects.new(RIG_PREFIX + "Pivot", None)
    scene.collection.objects.link(pivot)
    pivot.location = centre
    pivot.rotation_euler = (0.0, 0.0, 0.0)
    pivot.keyframe_insert("rotation_euler", index=2, frame=1)
    pivot.rotation_euler[2] = 2 * math.pi
    pivot.keyframe_insert("rotation_euler", index=2, frame=frames + 1)
    for fcurve in action_fcurves(pivot):
        for key in fcurve.keyframe_points:
            key.interpolation = "LINEAR"
        fcurve.extrapolation = "LINEAR"

    # 3. Camera on a circle of the pivot, looking at it.
    cam_data = bpy.data.cameras.new(RIG_PREFIX + "Camera")
    cam_data.sensor_fit = "AUTO"
    camera = bpy.data.objects.new(RIG_PREFIX + "Camera", cam_data)
    scene.collection.objects.link(camera)
    half_fov = math.atan(cam_data.sensor_width / (2 * cam_data.lens))
    distance = radius * options.margin / math.sin(half_fov)
    cam_data.clip_start = max(distance - 2 * radius, 1e-3) * 0.5
    cam_data.clip_end = (distance + 2 * radius) * 2
    elevation = math.radians(options.elevation_deg)
    camera.parent = pivot
    # Front faces -Y (Kiln's convention), so the first frame looks at the front.
    camera.location = (0.0, -distance * math.cos(elevation), distance * math.sin(elevation))
    aim = camera.constraints.new("TRACK_TO")
    aim.target = pivot
    aim.track_axis = "TRACK_NEGATIVE_Z"
    aim.up_axis = "UP_Y"
    scene.camera = camera

    # 4. Light and world.
    sun_data = bpy.data.lights.new(RIG_PREFIX + "Key", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new(RIG_PREFIX + "Key", sun_data)
    scene.collection.objects.link(sun)
    sun.parent = pivot
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(-35))
    world = bpy.data.worlds.new(RIG_PREFIX + "World")
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    if background is not None:
        background.inputs["Color"].default_value = (0.18, 0.18, 0.18, 1.0)
        background.inputs["Strength"].default_value = 1.0
    scene.world = world

    # 5. Render settings.
    configure_render(scene, options, frames)
    # 6. Expressions.
    if options.expressions:
        add_expression_cycle(obj, frames)
    return scene


def configure_render(scene: bpy.types.Scene, options: TurntableOptions, frames: int) -> None:
    render = scene.render
    if options.engine.upper().startswith("EEVEE"):
        render.engine = eevee_engine_id()
        eevee = scene.eevee
        if hasattr(eevee, "taa_render_samples"):
            eevee.taa_render_samples = max(int(options.samples), 1)
    else:
        render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = max(int(options.samples), 1)
        scene.cycles.use_denoising = False
        scene.cycles.use_adaptive_sampling = False
    size = int(options.size) + int(options.size) % 2
    render.resolution_x = render.resolution_y = size
    render.resolution_percentage = 100
    render.fps = int(options.fps)
    render.use_sequencer = False
    render.use_compositing = False
    scene.frame_start, scene.frame_end = 1, frames
    image = render.image_settings
    if hasattr(image, "media_type"):
        image.media_type = "VIDEO"  # Blender 5.0: FFMPEG is only offered for video media.
    image.file_format = "FFMPEG"
    ffmpeg = render.ffmpeg
    ffmpeg.format = "MPEG4"
    ffmpeg.codec = "H264"
    ffmpeg.constant_rate_factor = "HIGH"
    ffmpeg.ffmpeg_preset = "GOOD"
    ffmpeg.audio_codec = "NONE"


def movie_output_prefix(out_path: Path) -> str:
    """Where Blender writes the movie: it appends ``<start>-<end>.mp4`` to this prefix."""
    return str(out_path.with_name("." + out_path.stem + "_"))


def written_movie(out_path: Path, scene: bpy.types.Scene) -> Path:
    """The file Blender writes for ``out_path``: the hidden prefix plus the frame range."""
    return Path(f"{movie_output_prefix(out_path)}{scene.frame_start:04d}-{scene.frame_end:04d}.mp4")


def discard_movie(out_path: Path, scene: bpy.types.Scene | None) -> None:
    """Delete the partial movie of a cancelled or failed render (a hidden file nobody would find)."""
    if scene is not None:
        written_movie(out_path, scene).unlink(missing_ok=True)


def collect_movie(out_path: Path, scene: bpy.types.Scene) -> Path:
    """Move Blender's frame-range-named movie to ``out_path``."""
    written = written_movie(out_path, scene)
    if not written.is_file():
        raise RuntimeError(f"the turntable render wrote no video at {written}; see Blender's console")
    os.replace(written, out_path)
    return out_path


def render_turntable(obj: bpy.types.Object, out_path: Path, options: TurntableOptions) -> Path:
    """Render the turntable of ``obj`` to ``out_path`` (.mp4), blocking; returns the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    scene = build_turntable_scene(obj, options)
    scene.render.filepath = movie_output_prefix(out_path)
    try:
        result = bpy.ops.render.render(animation=True, scene=scene.name)
    except RuntimeError:
        discard_movie(out_path, scene)
        raise
    if "FINISHED" not in result:
        discard_movie(out_path, scene)
        raise RuntimeError("the turntable render was cancelled")
    return collect_movie(out_path, scene)


def add_video_strip(scene: bpy.types.Scene, path: Path, name: str = ""):
    """Add the video as a movie strip on the first free channel, starting at the scene's start."""
    strips = scene_strips(scene, create=True)
    channel = 1 + max((s.channel for s in strips), default=0)
    strip = strips.new_movie(
        name=name or Path(path).stem, filepath=str(path), channel=channel, frame_start=scene.frame_start
    )
    # Blender makes a one-frame strip with fps 0 for a file it cannot decode, silently.
    if getattr(strip, "fps", 1.0) <= 0:
        strips.remove(strip)
        raise RuntimeError(f"Blender cannot decode {Path(path).name}; is it a complete video file?")
    return strip


def add_image_plane(
    collection: bpy.types.Collection, path: Path, frames: int, name: str, location: Vector, size: float = 1.0
) -> bpy.types.Object:
    """A square plane facing -Y that plays the video (emission, so it shows as rendered)."""
    h = size / 2
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(-h, 0, -h), (h, 0, -h), (h, 0, h), (-h, 0, h)], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    for loop, co in zip(uv.data, ((0, 0), (1, 0), (1, 1), (0, 1)), strict=True):
        loop.uv = co
    plane = bpy.data.objects.new(name, mesh)
    collection.objects.link(plane)
    plane.location = location

    image = bpy.data.images.load(str(path), check_existing=True)
    image.source = "MOVIE"
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.image_user.frame_duration = frames
    tex.image_user.use_auto_refresh = True
    tex.image_user.use_cyclic = True
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    mesh.materials.append(mat)
    return plane
