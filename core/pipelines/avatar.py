"""Prompt and/or attributes -> tri-plane diffusion -> tri-plane field -> the shared asset path."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.avatar.reading.readings import MIN_CONFIDENCE
from core.avatar.record import RECORD_NAME, AvatarRecord
from core.avatar.vocab.attributes import AttributeValueError
from core.avatar.vocab.resolve import Resolved, resolve
from core.pipelines.jobs import EngineSettings, JobError, JobParams, OutputOptions
from core.progress import Reporter


@dataclass(frozen=True)
class AvatarRequest:
    """What to generate.

    Attributes:
        prompt: free text; the parser reads attributes out of it.
        attributes: explicit attribute values; they win over the prompt.
        seed: the same seed and inputs give the same avatar.
        n: number of avatars.
        guidance_scale: classifier-free guidance (None = the model's default).
        steps: DDIM steps.
        variation: how far each avatar strays from its attributes' mean, 0 .. 1.5 (None = the
            model's default).
        base_attributes: an earlier avatar's attributes to keep (a variant); the photo, the
            prompt and ``attributes`` win over them.
    """

    prompt: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    n: int = 1
    guidance_scale: float | None = None
    steps: int = 25
    variation: float | None = None
    base_attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class AvatarResult:
    """Generated avatars and how the request was read.

    Attributes:
        planes: (n, 3, C, R, R) tri-planes.
        fields: one ``TriplaneField`` per avatar, for the asset path.
        resolved: the asked-for attributes with their sources, and the parser's remarks.
        completed: per avatar, the full attributes it was conditioned on (the model draws the
            unspecified ones from its prior for each seed).
    """

    planes: torch.Tensor
    fields: list[Any]
    resolved: Resolved
    completed: list[dict[str, str]] = field(default_factory=list)

    @property
    def attributes(self) -> dict[str, str]:
        """The asked-for attributes the model was conditioned on (the rest varied with the seed)."""
        return self.resolved.attributes

    @property
    def unknown_words(self) -> list[str]:
        return list(self.resolved.unknown_words)

    @property
    def conflicts(self) -> list[str]:
        return list(self.resolved.conflicts)


def _load_model(weights: str | Path | None = None) -> Any:
    from core.avatar.model import ModelError, default_model

    try:
        return default_model(weights)
    except ModelError as e:
        raise JobError(str(e)) from e


def avatar(
    request: AvatarRequest,
    reporter: Reporter | None = None,
    model: Any = None,
    planes: torch.Tensor | None = None,
    photo_reading: Any = None,
) -> AvatarResult:
    """Generate avatars for ``request`` (no files written).

    Steps: 1. resolve the attributes (photo reading < prompt < explicit attributes); 2. load the
    model (the shipped one unless ``model`` is given); 3. sample tri-planes with DDIM (progress
    stage "sample"), unless ``planes`` from an earlier identical request are given.
    """
    reporter = reporter or Reporter()
    # 1. Attributes.
    try:
        resolved = resolve(request.prompt, request.attributes, photo_reading, request.base_attributes)
    except AttributeValueError as e:
        raise JobError(str(e)) from e
    # 2. Model.
    model = model if model is not None else _load_model()
    # 3. Sample.
    scale = model.default_guidance if request.guidance_scale is None else float(request.guidance_scale)
    reporter("sample", 0.0, "sampling tri-planes")

    def on_step(i: int, total: int) -> None:
        reporter("sample", (i + 1) / total, f"DDIM step {i + 1}/{total}")

    attrs = resolved.attributes
    if planes is None:
        try:
            planes = model.generate(
                attrs, request.seed, request.n, scale, request.steps, on_step, variation=request.variation
            )
        except ValueError as e:
            raise JobError(str(e)) from e
    completed = model.completed_attributes(attrs, request.seed, len(planes))
    return AvatarResult(
        planes=planes,
        fields=[model.field(p, c) for p, c in zip(planes, completed, strict=True)],
        resolved=resolved,
        completed=completed,
    )


def _sample_resumable(
    request: AvatarRequest,
    path: Path,
    key: str,
    reporter: Reporter,
    model: Any = None,
    photo_reading: Any = None,
) -> tuple[AvatarResult, bool]:
    """``avatar()``, reusing the planes an earlier run of the same request (``key``) saved at ``path``.

    The sample is deterministic; reusing it only saves the sampling time on a resume. New
    planes are saved atomically. Returns the result and whether the saved planes were reused.
    """
    saved = torch.load(path, weights_only=False) if path.exists() else {}
    reused = saved.get("key") == key
    result = avatar(request, reporter, model, saved["planes"] if reused else None, photo_reading)
    if not reused:
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, "planes": result.planes}, tmp)
        os.replace(tmp, path)
    return result, reused


def generate_avatar_job(
    params: JobParams,
    work_dir: Path,
    reporter: Reporter,
    settings: EngineSettings,
    photo_reading: Any = None,
) -> dict[str, Path]:
    """Both avatar jobs: attributes -> tri-planes -> the asset path -> ``attributes.json``, once.

    Steps: 1. generate the tri-planes (or reuse ``checkpoints/avatar_planes.pt`` from an
    interrupted run of the same request); 2. run the asset path on the tri-plane field, rigged
    (``params.rig``, on by default) from landmarks fitted on its surface; 3. write the ``AvatarRecord``:
    the attributes with their sources (and the photo reading); ``stats.rig`` says whether the
    GLB is rigged, with which bones, shape keys and landmarks, or why not.
    """
    from core.assets import AssetOptions, build_asset

    options = AssetOptions.from_output(params.output, rig=params.rig)
    request = AvatarRequest(
        prompt=params.prompt,
        attributes=dict(params.attributes),
        seed=int(params.seed or 0),
        guidance_scale=params.guidance_scale,
        variation=params.variation,
        base_attributes=dict(params.base_attributes),
    )
    model = _load_model(settings.avatar_weights)

    # 1. Tri-planes, resumable.
    ckpt_dir = work_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    photo_json = photo_reading.to_json(MIN_CONFIDENCE) if photo_reading is not None else None
    key = json.dumps(
        [request.prompt, request.attributes, request.seed, request.guidance_scale, request.variation]
        + ([request.base_attributes] if request.base_attributes else [])
        + ([photo_json["attributes"]] if photo_json else []),
        sort_keys=True,
    )
    result, _ = _sample_resumable(
        request, ckpt_dir / "avatar_planes.pt", key, reporter.sub(0.0, 0.3), model, photo_reading
    )

    # 2. The asset path.
    completed = (result.completed[:1] or [{}])[0]
    asset = build_asset(
        result.fields[0],
        work_dir,
        options,
        reporter.sub(0.3, 0.97),
        name="avatar",
        landmarks=landmark_fitter(result.fields[0], completed),
    )

    # 3. attributes.json.
    record = AvatarRecord.build(
        request.prompt,
        result.resolved,
        completed,
        request.seed,
        request.guidance_scale,
        request.variation,
        photo=photo_json,
        stats=asset.stats,
    ).write(work_dir)
    reporter("done", 1.0, "avatar ready")
    artifacts = {"asset.glb": asset.glb, "preview.png": asset.preview, RECORD_NAME: record}
    if asset.video is not None:
        artifacts["turntable.mp4"] = asset.video
    return artifacts


def run_avatar_job(
    params: JobParams, work_dir: Path, reporter: Reporter, settings: EngineSettings
) -> dict[str, Path]:
    """The ``avatar`` job (see core/pipelines/jobs.py and docs/API.md): a prompt and attributes."""
    return generate_avatar_job(params, work_dir, reporter, settings)


# ---------------------------------------------------------------------------------------
# Batches: many avatars from one request, the asset path spread over processes.


def landmark_fitter(field: Any, attributes: dict[str, str]) -> Any:
    """The asset path's landmark source for an avatar ``field`` made with ``attributes``: mesh
    vertices -> ``core.avatar.landmarks.LandmarkEstimate`` (fitted on the surface, or the fit its
    attached parts were placed by, ``core.avatar.model.attach``)."""
    from core.avatar.landmarks import estimate_landmarks

    if hasattr(field, "landmark_estimate"):
        return lambda vertices: field.landmark_estimate()

    return lambda vertices: estimate_landmarks(field, vertices, attributes or None)


def _build_one(
    planes: torch.Tensor,
    decoder_state: dict,
    decoder_cfg: dict,
    dest: Path,
    options: Any,
    attributes: dict[str, str] | None = None,
) -> dict:
    """One avatar's asset files, in a worker process (one torch thread each)."""
    from core.assets import build_asset
    from core.avatar.model.avatar_model import avatar_field
    from core.avatar.model.triplane import TriplaneConfig, TriplaneDecoder

    torch.set_num_threads(1)
    decoder = TriplaneDecoder(TriplaneConfig(**decoder_cfg))
    decoder.load_state_dict(decoder_state)
    field = avatar_field(planes, decoder, attributes)
    asset = build_asset(
        field, dest, options, name="avatar", landmarks=landmark_fitter(field, attributes or {})
    )
    return asset.stats


def make_batch(
    request: AvatarRequest,
    out_dir: Path,
    options: Any,
    workers: int | None = None,
    reporter: Reporter | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """``request.n`` avatars into ``out_dir/avatar_000 ..`` (GLB, preview, video per ``options``).

    All tri-planes are sampled in one batched DDIM run and saved (``planes.pt``); the asset
    path then runs in ``workers`` processes (default: one per CPU core, at most n). Run again
    after a crash or a cancel: avatars whose ``asset.glb`` exists are kept, the planes are
    reused when the request is the same, and only the missing avatars are built.

    Returns:
        The summary also written to ``out_dir/batch.json``.
    """
    import dataclasses
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = json.dumps(dataclasses.asdict(request), sort_keys=True)
    model = model if model is not None else _load_model()
    result, reused = _sample_resumable(request, out_dir / "planes.pt", key, reporter.sub(0.0, 0.2), model)
    dests = [out_dir / f"avatar_{i:03d}" for i in range(len(result.planes))]
    todo = [i for i, d in enumerate(dests) if not (d / "asset.glb").is_file()]
    before: dict[int, Any] = {}
    if (out_dir / "batch.json").is_file() and reused:  # figures of avatars kept
        before = {a["index"]: a["stats"] for a in json.loads((out_dir / "batch.json").read_text())["avatars"]}
    stats: dict[int, Any] = {}
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    assets = reporter.sub(0.2, 0.99)
    cfg = dataclasses.asdict(model.decoder.cfg)
    state = model.decoder.state_dict()
    if workers == 1:
        for k, i in enumerate(todo):
            assets("assets", k / max(len(todo), 1), f"avatar {i + 1}/{len(dests)}")
            stats[i] = _build_one(result.planes[i], state, cfg, dests[i], options, result.completed[i])
    else:
        # spawn, not fork: this process has torch's threads running.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(
                    _build_one, result.planes[i], state, cfg, dests[i], options, result.completed[i]
                ): i
                for i in todo
            }
            try:
                for k, fut in enumerate(as_completed(futures)):
                    stats[futures[fut]] = fut.result()
                    assets("assets", (k + 1) / len(todo), f"{k + 1}/{len(todo)} avatars built")
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    summary = {
        "request": dataclasses.asdict(request),
        "attributes": result.attributes,
        "unknown_words": result.unknown_words,
        "conflicts": result.conflicts,
        "avatars": [
            {
                "index": i,
                "glb": str(d / "asset.glb"),
                "attributes": result.completed[i],
                "built_now": i in stats,
                "stats": stats.get(i, before.get(i)),
            }
            for i, d in enumerate(dests)
        ],
    }
    tmp = out_dir / "batch.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out_dir / "batch.json")
    reporter("done", 1.0, f"{len(dests)} avatars in {out_dir}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Avatars from a prompt on the command line (batches for a render node)."""
    import argparse
    import sys
    import time

    from core.assets import AssetError, AssetOptions

    ap = argparse.ArgumentParser(prog="python -m core.pipelines.avatar", description=main.__doc__)
    ap.add_argument("--prompt", default="", help='e.g. "an elderly man with a grey beard and round glasses"')
    ap.add_argument(
        "--attr", action="append", default=[], metavar="NAME=VALUE", help="explicit attribute (wins)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=1, help="avatars to make (1..64)")
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1..10)")
    ap.add_argument(
        "--variation",
        type=float,
        default=None,
        help="0 = the attributes' mean look, 1 = full sample (0..1.5)",
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="folder; run again to finish an interrupted batch"
    )
    ap.add_argument(
        "--workers", type=int, default=None, help="processes for the asset path (default: CPU cores)"
    )
    ap.add_argument("--resolution", type=int, default=OutputOptions.resolution)
    ap.add_argument("--texture-size", type=int, default=OutputOptions.texture_size)
    ap.add_argument("--turntable-frames", type=int, default=0, help="0 = no video (a preview still only)")
    ap.add_argument(
        "--rig",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rig each avatar: bones, skin weights and expression shape keys in the GLB (default: on)",
    )
    args = ap.parse_args(argv)
    attrs = {}
    for item in args.attr:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--attr takes NAME=VALUE, got {item!r}")
        attrs[name.strip()] = value.strip()
    options = AssetOptions(
        resolution=args.resolution,
        texture_size=args.texture_size,
        turntable_frames=args.turntable_frames,
        rig=args.rig,
    )
    request = AvatarRequest(args.prompt, attrs, args.seed, args.n, args.guidance, variation=args.variation)

    def report(event: Any) -> None:
        print(f"[{event.stage}] {event.fraction:4.0%} {event.message}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    try:
        options.validate()
        summary = make_batch(request, args.out, options, args.workers, Reporter(report))
    except (JobError, AssetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder without write permission
        print(
            f"error: {e}; fix that and run the same command again: finished avatars are kept",
            file=sys.stderr,
        )
        return 1
    if summary["unknown_words"]:
        print(f"words not understood: {', '.join(summary['unknown_words'])}", file=sys.stderr)
    for c in summary["conflicts"]:
        print(f"conflict: {c}", file=sys.stderr)
    print(
        f"{len(summary['avatars'])} avatars in {args.out} ({time.perf_counter() - t:.1f} s); see batch.json"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
