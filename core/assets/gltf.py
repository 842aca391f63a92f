"""A small glTF 2.0 binary (GLB) writer for textured meshes: PBR material, Y-up, grounded."""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from core import __version__
from core.assets.mesh import AssetError
from core.assets.texture import TexturedMesh

# glTF enums.
_FLOAT = 5126
_UINT = 5125
_UBYTE = 5121
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_LINEAR = 9729
_LINEAR_MIPMAP_LINEAR = 9987
_CLAMP_TO_EDGE = 33071
FILE_MODE = 0o644  # mkstemp makes 0600 files; artifacts are for other users and tools to read

# Kiln (x, y, z) Z-up, front -Y  ->  glTF (x, z, -y) Y-up, front +Z. Blender's importer
# applies the inverse, so an asset comes back into Blender exactly where Kiln put it.
KILN_TO_GLTF = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)


def ground_and_centre(vertices: np.ndarray) -> np.ndarray:
    """(3,) offset that centres the XY bounding box on the origin and puts the lowest point on z = 0."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]], np.float32)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] -> linear [0, 1] (glTF vertex colours are linear)."""
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _png_bytes(texture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(texture, dtype=np.uint8), "RGB").save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def _pad4(data: bytes, fill: bytes) -> bytes:
    return data + fill * ((4 - len(data) % 4) % 4)


def face_groups(mesh: TexturedMesh, faces: np.ndarray, name: str) -> list[tuple[str, np.ndarray]]:
    """(material name, (F_k, 3) faces) for each primitive of the GLB.

    A mesh without parts gives one group, ``{name}_material`` with every face; a mesh with
    ``face_parts`` gives one group per part that has faces, named after the part, in
    ``part_names`` order, each face in exactly one group.
    """
    if mesh.face_parts is None or not mesh.part_names:
        return [(f"{name}_material", faces)]
    labels = np.asarray(mesh.face_parts)
    if labels.shape != (len(faces),) or not np.issubdtype(labels.dtype, np.integer):
        raise AssetError(f"face_parts must be ({len(faces)},) integers, got {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(mesh.part_names):
        raise AssetError(f"face_parts must index the {len(mesh.part_names)} part_names")
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(mesh.part_names) + 1))
    return [
        (part, faces[order[lo:hi]])
        for part, lo, hi in zip(mesh.part_names, bounds[:-1], bounds[1:], strict=True)
        if hi > lo
    ]


def build_glb(
    mesh: TexturedMesh, vertex_colors: bool = False, name: str = "asset", recentre: bool = True
) -> bytes:
    """Encode ``mesh`` as GLB bytes (see ``write_glb``)."""
    # 1. Check inputs.
    if mesh.num_faces == 0 or mesh.num_vertices == 0:
        raise AssetError("cannot export an empty mesh")
    if mesh.texture.ndim != 3 or mesh.texture.shape[2] != 3 or mesh.texture.dtype != np.uint8:
        raise AssetError(f"texture must be (H, W, 3) uint8, got {mesh.texture.shape} {mesh.texture.dtype}")
    if vertex_colors and mesh.colors is None:
        raise AssetError("vertex_colors=True needs TexturedMesh.colors; bake with colours or pass False")
    faces = np.asarray(mesh.faces, np.int64)
    if faces.min() < 0 or faces.max() >= mesh.num_vertices:
        raise AssetError("face indices are out of range of the vertices")

    # 2. Transform: ground, centre, then Z-up -> Y-up.
    verts = np.asarray(mesh.vertices, np.float32)
    offset = ground_and_centre(verts) if recentre else np.zeros(3, np.float32)
    verts = verts + offset  # the rig's joints move with the vertices
    positions = np.ascontiguousarray(verts @ KILN_TO_GLTF.T, dtype=np.float32)
    normals = np.asarray(mesh.normals, np.float32) @ KILN_TO_GLTF.T
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(
        length > 1e-6, normals / np.maximum(length, 1e-12), np.array([0.0, 1.0, 0.0], np.float32)
    )
    normals = np.ascontiguousarray(normals, dtype=np.float32)
    uvs = np.ascontiguousarray(mesh.uvs, dtype=np.float32)

    # 3. Binary buffer: one bufferView per attribute, each 4-byte aligned.
    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def add_view(data: bytes, target: int | None) -> int:
        while len(blob) % 4:
            blob.append(0)
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        blob.extend(data)
        views.append(view)
        return len(views) - 1

    def add_accessor(array: np.ndarray, kind: str, target: int | None, with_bounds: bool = False) -> int:
        comp = {np.dtype(np.uint32): _UINT, np.dtype(np.uint8): _UBYTE}.get(array.dtype, _FLOAT)
        acc = {
            "bufferView": add_view(array.tobytes(), target),
            "componentType": comp,
            "count": int(len(array)),
            "type": kind,
        }
        if with_bounds:
            acc["min"] = [float(x) for x in array.min(axis=0)]
            acc["max"] = [float(x) for x in array.max(axis=0)]
        accessors.append(acc)
        return len(accessors) - 1

    attributes = {
        "POSITION": add_accessor(positions, "VEC3", _ARRAY_BUFFER, with_bounds=True),
        "NORMAL": add_accessor(normals, "VEC3", _ARRAY_BUFFER),
        "TEXCOORD_0": add_accessor(uvs, "VEC2", _ARRAY_BUFFER),
    }
    if vertex_colors:
        colours = np.ascontiguousarray(srgb_to_linear(np.clip(mesh.colors, 0, 1)), dtype=np.float32)
        attributes["COLOR_0"] = add_accessor(colours, "VEC3", _ARRAY_BUFFER)
    rig = mesh.rig
    targets: list[dict] = []
    if rig is not None:
        _check_rig(rig, mesh.num_vertices)
        attributes["JOINTS_0"] = add_accessor(
            np.ascontiguousarray(rig.joints, np.uint8), "VEC4", _ARRAY_BUFFER
        )
        attributes["WEIGHTS_0"] = add_accessor(
            np.ascontiguousarray(rig.weights, np.float32), "VEC4", _ARRAY_BUFFER
        )
        targets = [
            {
                "POSITION": add_accessor(
                    np.ascontiguousarray(np.asarray(delta, np.float32) @ KILN_TO_GLTF.T, np.float32),
                    "VEC3",
                    _ARRAY_BUFFER,
                    with_bounds=True,
                )
            }
            for delta in rig.shape_keys.values()
        ]
    # One primitive and material per part (a single one without parts), all over the same vertices.
    groups = face_groups(mesh, faces, name)
    primitives = [
        {
            "attributes": attributes,
            "indices": add_accessor(
                np.ascontiguousarray(group.reshape(-1), dtype=np.uint32), "SCALAR", _ELEMENT_ARRAY_BUFFER
            ),
            "material": k,
            "mode": 4,
            **({"targets": targets} if targets else {}),
        }
        for k, (_, group) in enumerate(groups)
    ]
    nodes: list[dict] = [{"name": name, "mesh": 0}]
    scene_nodes = [0]
    mesh_json: dict = {"name": name, "primitives": primitives}
    skins: dict = {}
    if rig is not None:
        # Joints: nodes 1.. in BONES order, bind pose = translations only, the root a scene root
        # beside the skinned mesh (a skinned mesh's node must be a root without a transform).
        world = (np.asarray(rig.joint_positions, np.float32) + offset) @ KILN_TO_GLTF.T
        first = len(nodes)
        for i, (bone, parent) in enumerate(zip(rig.bones, rig.parents, strict=True)):
            local = world[i] - (world[parent] if parent >= 0 else 0.0)
            joint: dict = {"name": bone, "translation": [float(c) for c in local]}
            children = [first + k for k, p in enumerate(rig.parents) if p == i]
            if children:
                joint["children"] = children
            nodes.append(joint)
        scene_nodes.append(first + rig.parents.index(-1))
        ibm = np.tile(np.eye(4, dtype=np.float32), (len(rig.bones), 1, 1))
        ibm[:, 3, :3] = -world  # column-major: the translation is the last column
        skins = {
            "skins": [
                {
                    "name": f"{name}_rig",
                    "inverseBindMatrices": add_accessor(ibm.reshape(-1, 16), "MAT4", None),
                    "joints": list(range(first, first + len(rig.bones))),
                    "skeleton": first + rig.parents.index(-1),
                }
            ]
        }
        nodes[0]["skin"] = 0
        names = list(rig.shape_keys)
        mesh_json["weights"] = [0.0] * len(names)
        mesh_json["extras"] = {"targetNames": names}
    pbr: dict = {"metallicFactor": 0.0, "roughnessFactor": 0.8}
    textured: dict = {}
    if not vertex_colors:
        # glTF multiplies COLOR_0 into the base colour, so texture and vertex colours are exclusive.
        image_view = add_view(_png_bytes(mesh.texture), None)
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
        textured = {
            "textures": [{"sampler": 0, "source": 0}],
            "samplers": [
                {
                    "magFilter": _LINEAR,
                    "minFilter": _LINEAR_MIPMAP_LINEAR,
                    "wrapS": _CLAMP_TO_EDGE,
                    "wrapT": _CLAMP_TO_EDGE,
                }
            ],
            "images": [{"name": f"{name}_basecolor", "bufferView": image_view, "mimeType": "image/png"}],
        }

    # 4. Scene description.
    gltf = {
        "asset": {"version": "2.0", "generator": f"Kiln {__version__}"},
        "scene": 0,
        "scenes": [{"name": name, "nodes": scene_nodes}],
        "nodes": nodes,
        "meshes": [mesh_json],
        **skins,
        "materials": [
            {"name": material, "pbrMetallicRoughness": pbr, "doubleSided": False} for material, _ in groups
        ],
        **textured,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }

    # 5. GLB container: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded).
    json_chunk = _pad4(json.dumps(gltf, separators=(",", ":")).encode("utf-8"), b" ")
    bin_chunk = _pad4(bytes(blob), b"\x00")
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    out = bytearray(struct.pack("<4sII", b"glTF", 2, total))
    out += struct.pack("<I4s", len(json_chunk), b"JSON") + json_chunk
    out += struct.pack("<I4s", len(bin_chunk), b"BIN\x00") + bin_chunk
    return bytes(out)


def _check_rig(rig, num_vertices: int) -> None:
    joints, weights = np.asarray(rig.joints), np.asarray(rig.weights)
    if joints.shape != (num_vertices, 4) or weights.shape != (num_vertices, 4):
        raise AssetError(
            f"rig joints and weights must be ({num_vertices}, 4), got {joints.shape} {weights.shape}"
        )
    if joints.max(initial=0) >= len(rig.bones):
        raise AssetError(f"rig joints must index its {len(rig.bones)} bones")
    if np.abs(weights.astype(np.float64).sum(axis=1) - 1).max(initial=0) > 1e-6 or weights.min(initial=0) < 0:
        raise AssetError("rig weights must be non-negative and sum to 1 per vertex")
    for key, delta in rig.shape_keys.items():
        if np.asarray(delta).shape != (num_vertices, 3):
            raise AssetError(f"shape key {key!r} must be ({num_vertices}, 3)")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_glb(
    mesh: TexturedMesh,
    path: Path | str,
    vertex_colors: bool = False,
    name: str = "asset",
    recentre: bool = True,
) -> Path:
    """Write ``mesh`` as a binary glTF 2.0 file.

    The file holds one node and mesh named ``name`` with a PBR metallic-roughness
    material whose baseColorTexture is the baked albedo (PNG, sRGB); metallic 0,
    roughness 0.8. A mesh with parts (``face_parts``) gets one primitive per part
    present, each with its own material named after the part ("hair") and the same
    texture and settings, all over one shared set of vertex attributes. Positions are
    metres, converted from Kiln's Z-up to glTF's Y-up; with ``recentre`` the asset is
    centred on the origin in plan and rests on the ground plane. ``vertex_colors`` writes the albedo as a linear COLOR_0 attribute
    instead of the texture (glTF multiplies the two, so they are never both set);
    UVs are kept either way.
    The file appears under ``path`` only once complete (temp file + rename).

    Returns:
        ``path``.
    """
    path = Path(path)
    atomic_write(path, build_glb(mesh, vertex_colors=vertex_colors, name=name, recentre=recentre))
    return path
