"""Photo reading evaluation: synthetic renders with ground truth, real photos, and photo -> GLB time.

Usage:
    .venv/bin/python -m bench.photo_avatar_eval [--n 60] [--seed 5000] [--size 256] [--json out.json]
        [--hats] [--skip-real] [--skip-glb]

1. Synthetic: engine avatars (headwear fixed to "none": a hat hides the hair the reader
   measures) rendered front-on by core.avatar.procedural.synthetic_photo with random lighting and
   backdrop, then read back. Per attribute: how often a face was found, how often the
   reader was confident (coverage), accuracy of the confident readings, and chance
   (uniform over the vocabulary, and always guessing the most common true value).
   The reader's thresholds were calibrated on seeds 3000-3079; the default seeds here
   are different avatars.
2. Real photos shipped by packages (scikit-image's astronaut and camera, matplotlib's
   grace_hopper): what is read, with confidences, and how long it takes.
3. Photo -> GLB: the photo_avatar job end to end on the astronaut, timed (needs the
   avatar pipeline, core.pipelines.avatar).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from core.avatar.procedural.engine import AvatarField
from core.avatar.procedural.synthetic_photo import PhotoCamera, random_lighting, render_photo
from core.avatar.reading import read_photo
from core.avatar.reading.face import find_face
from core.avatar.reading.photo import PhotoError, load_photo
from core.avatar.vocab.attributes import VOCAB, sample_attributes

READ = (
    "skin_tone",
    "hair_color",
    "hair_style",
    "beard",
    "moustache",
    "glasses",
    "eye_color",
    "head_shape",
    "jaw",
    "presentation",
)
# The reader says hair length coarsely: "short" covers every style with short sides.
COARSE_HAIR = {"bald": "bald", "buzz": "short", "short": "short", "bun": "short", "ponytail": "short",
               "bob": "bob", "curly": "bob", "long": "long"}  # fmt: skip
CAMERA = PhotoCamera(size=256, view_height=0.42, look_at=(0.0, 0.0, 0.06))


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def synthetic(n: int, seed: int, size: int, hats: bool = False) -> dict:
    """Render ``n`` avatars and read them back; per-attribute accuracy against chance.

    With ``hats`` the avatars wear caps and beanies as often as the sampler says (40 %),
    which hides the hair: the figures then show how much a hat misleads the hair readers.
    """
    camera = PhotoCamera(size=size, view_height=CAMERA.view_height, look_at=CAMERA.look_at)
    truth_counts: dict[str, collections.Counter] = {a: collections.Counter() for a in READ}
    stats = {a: {"n": 0, "read": 0, "correct": 0} for a in READ}
    stats["hair_style (coarse)"] = {"n": 0, "read": 0, "correct": 0}
    found = 0
    t_render = t_read = 0.0
    for i in range(seed, seed + n):
        rng = np.random.default_rng(i)
        attrs = sample_attributes(rng, None if hats else {"headwear": "none"})
        t0 = time.perf_counter()
        img = render_photo(AvatarField(attrs, seed=i), random_lighting(rng), camera, rng)
        t1 = time.perf_counter()
        try:
            reading = read_photo(_png(img))
        except PhotoError:
            reading = None
        t_read += time.perf_counter() - t1
        t_render += t1 - t0
        found += reading is not None
        for a in READ:
            truth = getattr(attrs, a)
            if a == "hair_color" and attrs.hair_style == "bald":
                continue  # nothing to see
            truth_counts[a][truth] += 1
            keys = [(a, truth)]
            if a == "hair_style":
                keys.append(("hair_style (coarse)", COARSE_HAIR[truth]))
            for key, want in keys:
                stats[key]["n"] += 1
                if reading is None:
                    continue
                got = reading.attributes().get(a)
                if got is None:
                    continue
                stats[key]["read"] += 1
                stats[key]["correct"] += int((COARSE_HAIR[got] if key != a else got) == want)
    rows = {}
    for key, s in stats.items():
        base = key.split(" ")[0]
        counts = truth_counts[base]
        values = VOCAB[base] if key == base else sorted(set(COARSE_HAIR.values()))
        if key != base:
            counts = collections.Counter()
            for k, v in truth_counts[base].items():
                counts[COARSE_HAIR[k]] += v
        rows[key] = {
            "n": s["n"],
            "coverage": s["read"] / max(s["n"], 1),
            "accuracy": s["correct"] / max(s["read"], 1),
            "chance_uniform": 1.0 / len(values),
            "chance_majority": max(counts.values()) / max(sum(counts.values()), 1),
        }
    return {
        "avatars": n,
        "faces_found": found,
        "render_s": t_render / n,
        "read_s": t_read / n,
        "attributes": rows,
    }


def real_photos() -> dict:
    """Read the face photos that installed packages ship."""
    from skimage import data

    photos: dict[str, bytes | str] = {
        "skimage astronaut": _png(data.astronaut()),
        "skimage camera": _png(data.camera()),
    }
    try:
        from matplotlib import cbook

        photos["matplotlib grace_hopper"] = str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except ImportError:
        pass
    out = {}
    for name, src in photos.items():
        t0 = time.perf_counter()
        try:
            reading = read_photo(src)
            out[name] = {"seconds": time.perf_counter() - t0} | reading.to_json()
        except PhotoError as e:
            out[name] = {"seconds": time.perf_counter() - t0, "error": str(e)}
    return out


def roundtrip(n: int, seed: int, size: int, weights: Path | None = None) -> dict:
    """A photo's avatar shows what the photo showed: photo -> reading -> avatar -> photo -> reading.

    Engine avatars without hats are rendered as photos and read; the shipped model generates an
    avatar from what was read (as the photo_avatar job does: the readings, the rest drawn per
    seed); that avatar is rendered front-on under another random light and read again. The score is the
    share of the first readings that the second gives back. The ceiling is the same loop with the
    engine's avatar of the same (completed) attributes in place of the model's.
    """
    from core.avatar.model import WEIGHTS_DIR, AvatarModel
    from core.avatar.vocab.attributes import AvatarAttributes

    model = AvatarModel.load(weights or WEIGHTS_DIR)
    camera = PhotoCamera(size=size, view_height=CAMERA.view_height, look_at=CAMERA.look_at)

    def read(field, key: int) -> dict[str, str]:
        light = random_lighting(np.random.default_rng([key, 1]))  # the same light for model and engine
        try:
            return read_photo(_png(render_photo(field, light, camera))).attributes()
        except PhotoError:
            return {}

    per_attr: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    t_model = 0.0
    for i in range(seed, seed + n):
        rng = np.random.default_rng(i)
        attrs = sample_attributes(rng, {"headwear": "none"})
        try:
            first = read_photo(
                _png(render_photo(AvatarField(attrs, seed=i), random_lighting(rng), camera, rng))
            )
        except PhotoError:
            continue
        asked = first.attributes()
        if not asked:
            continue
        t0 = time.perf_counter()
        planes = model.generate(asked, seed=i)
        t_model += time.perf_counter() - t0
        back = read(model.field(planes[0]), i)
        full = model.completed_attributes(asked, seed=i)[0]
        painted_back = read(model.field(planes[0], full, attach=False), i)  # parts painted only
        job_back = read(model.field(planes[0], full), i)  # as a job makes it: painted, parts attached
        completed = AvatarAttributes(**full)
        engine_back = read(AvatarField(completed, seed=i), i)
        for k, v in asked.items():
            per_attr[k]["asked"] += 1
            per_attr[k]["model"] += back.get(k) == v
            per_attr[k]["painted"] += painted_back.get(k) == v
            per_attr[k]["job"] += job_back.get(k) == v
            per_attr[k]["engine"] += engine_back.get(k) == v
        totals["photos"] += 1
    asked = sum(c["asked"] for c in per_attr.values())
    out = {
        "photos": totals["photos"],
        "readings": asked,
        "model_back": sum(c["model"] for c in per_attr.values()) / max(asked, 1),
        "painted_back": sum(c["painted"] for c in per_attr.values()) / max(asked, 1),
        "job_back": sum(c["job"] for c in per_attr.values()) / max(asked, 1),
        "engine_back": sum(c["engine"] for c in per_attr.values()) / max(asked, 1),
        "generate_s": t_model / max(totals["photos"], 1),
        "attributes": {
            k: {
                "asked": c["asked"],
                "model": c["model"] / c["asked"],
                "painted": c["painted"] / c["asked"],
                "job": c["job"] / c["asked"],
                "engine": c["engine"] / c["asked"],
            }
            for k, c in sorted(per_attr.items())
        },
    }
    out["ratio"] = out["model_back"] / out["engine_back"] if out["engine_back"] else None
    out["painted_ratio"] = out["painted_back"] / out["engine_back"] if out["engine_back"] else None
    out["job_ratio"] = out["job_back"] / out["engine_back"] if out["engine_back"] else None
    return out


def photo_to_glb() -> dict:
    """Time photo -> GLB on the astronaut (draft settings, no turntable).

    First the photo_avatar job end to end (reader + avatar model + asset path). Where the
    model cannot run (no weights yet), the same photo is timed through the procedural
    engine instead (reader + AvatarField + asset path), labelled as such.
    """
    from skimage import data

    from core.pipelines.jobs import JobError
    from core.pipelines.photo_avatar import run_photo_avatar_job
    from core.progress import Reporter

    out: dict = {"target_s": 15.0}
    output = {"resolution": 128, "texture_size": 512, "turntable_frames": 0, "turntable_size": 256}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo = work / "photo.png"
        photo.write_bytes(_png(data.astronaut()))
        params = {"photo_path": str(photo), "prompt": "", "seed": 0, "attributes": {}, "output": output}
        t0 = time.perf_counter()
        try:
            artifacts = run_photo_avatar_job(params, work / "job", Reporter())
            out["model_path"] = {
                "seconds": time.perf_counter() - t0,
                "artifacts": sorted(artifacts),
                "glb_bytes": artifacts["asset.glb"].stat().st_size,
            }
        except (JobError, ImportError) as e:
            out["model_path"] = {"skipped": str(e)}

        from core.assets import AssetOptions, build_asset
        from core.avatar.vocab.attributes import sample_attributes

        t0 = time.perf_counter()
        reading = read_photo(photo)
        t1 = time.perf_counter()
        attrs = sample_attributes(np.random.default_rng(0), reading.attributes())
        options = AssetOptions(resolution=128, texture_size=512, turntable_frames=0)
        asset = build_asset(AvatarField(attrs, seed=0), work / "engine", options, Reporter(), name="avatar")
        out["engine_path"] = {
            "seconds": time.perf_counter() - t0,
            "read_s": t1 - t0,
            "glb_bytes": asset.glb.stat().st_size,
            "faces": asset.stats.get("faces"),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="synthetic avatars to render and read")
    ap.add_argument("--seed", type=int, default=5000, help="first avatar seed (calibration used 3000-3079)")
    ap.add_argument("--size", type=int, default=256, help="render size in pixels")
    ap.add_argument("--hats", action="store_true", help="let avatars wear hats (hidden hair)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-glb", action="store_true")
    ap.add_argument(
        "--roundtrip", type=int, default=40, help="photos for the photo -> avatar -> photo loop (0 = skip)"
    )
    ap.add_argument(
        "--weights", type=Path, default=None, help="model folder for --roundtrip (default: shipped)"
    )
    args = ap.parse_args()

    # Warm MediaPipe up so the first timing is not its start-up.
    with contextlib.suppress(PhotoError):
        find_face(load_photo(_png(np.full((64, 64, 3), 128, np.uint8))))

    report: dict = {}
    if args.n > 0:
        syn = synthetic(args.n, args.seed, args.size, args.hats)
        report["synthetic"] = syn
        print(f"synthetic: {syn['faces_found']}/{syn['avatars']} faces found; "
              f"render {syn['render_s']:.2f} s, read {syn['read_s']:.2f} s per photo")  # fmt: skip
        print(
            f"{'attribute':22s} {'n':>4s} {'coverage':>9s} {'accuracy':>9s} {'uniform':>8s} {'majority':>9s}"
        )
        for name, r in syn["attributes"].items():
            print(
                f"{name:22s} {r['n']:4d} {r['coverage']:9.2f} {r['accuracy']:9.2f} "
                f"{r['chance_uniform']:8.2f} {r['chance_majority']:9.2f}"
            )
    if not args.skip_real:
        report["real"] = real_photos()
        for name, r in report["real"].items():
            if "error" in r:
                print(f"{name}: {r['error']} ({r['seconds']:.2f} s)")
                continue
            read = ", ".join(f"{k}={v['value']}({v['confidence']:.2f})" for k, v in r["read"].items())
            print(
                f"{name}: {r['seconds']:.2f} s; used {r['attributes']}\n    all: {read}\n    warnings: {r['warnings']}"
            )
    if args.roundtrip > 0:
        rt = roundtrip(args.roundtrip, args.seed + 500, args.size, args.weights)
        report["roundtrip"] = rt
        print(
            f"round trip: {rt['photos']} photos, {rt['readings']} readings; given back by the model's avatar "
            f"{rt['model_back']:.2f}, by the engine's (ceiling) {rt['engine_back']:.2f}, ratio "
            + ("-" if rt["ratio"] is None else f"{rt['ratio']:.2f}")
            + f"; with its parts painted {rt['painted_back']:.2f}"
            + ("" if rt["painted_ratio"] is None else f" (ratio {rt['painted_ratio']:.2f})")
            + f"; as a job makes it (painted, small parts attached) {rt['job_back']:.2f}"
            + ("" if rt["job_ratio"] is None else f" (ratio {rt['job_ratio']:.2f})")
        )
        for k, r in rt["attributes"].items():
            print(
                f"  {k:15s} n {r['asked']:3d}  model {r['model']:.2f}  painted {r['painted']:.2f}  "
                f"job {r['job']:.2f}  engine {r['engine']:.2f}"
            )
    if not args.skip_glb:
        report["photo_to_glb"] = photo_to_glb()
        print("photo -> GLB:", report["photo_to_glb"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
