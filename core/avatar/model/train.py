"""Resumable training of the avatar model: data -> decoder -> fit -> diffusion -> export.

Usage::

    python -m core.avatar.model.train --stage all --work /tmp/avatar_work --config cpu --max-minutes 25
    python -m core.avatar.model.train --stage export --work /tmp/avatar_work --config cpu --out core/avatar/model/weights

Every stage writes its results under ``--work`` (never into git) and checkpoints often, so the
same command run again continues where the last one stopped. ``--max-minutes`` bounds one
run; a stage that runs out of time saves and exits with status 3 ("not finished, run again").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.avatar.model.diffusion import DiffusionConfig, DiffusionTrainConfig
from core.avatar.model.triplane import (
    FitConfig,
    PointSet,
    TriplaneConfig,
    TriplaneDecoder,
    decode_sdf_grid,
    fit_loss,
    fit_planes,
    grid_points,
    occupancy_iou,
    sample_field_points,
)
from core.avatar.vocab.attributes import ATTRIBUTE_NAMES, AvatarAttributes, sample_attributes
from core.avatar.vocab.parts import PART_NAMES

POINT_KEYS = ("uniform_xyz", "uniform_sdf", "near_xyz", "near_sdf", "near_rgb", "near_part")

FACE_BOX = ((-0.12, 0.12), (-0.16, 0.04), (-0.07, 0.25))
"""Where the face's small parts are (x, y, z intervals, metres): the focus of the planes'
texels and of half the near-surface supervision points."""
STAGES = ("data", "decoder", "fit", "diffusion")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run (sizes, steps, seeds)."""

    n_avatars: int = 640
    """Avatars in the training set (tri-planes the diffusion model learns from)."""
    decoder_avatars: int = 128
    """How many of them the shared decoder is fitted on, jointly with their planes."""
    seed_base: int = 1000
    """Avatar i uses attributes drawn from rng([seed_base, i]) and engine seed seed_base * 100000 + i.
    Evaluation uses a different base (bench/avatar_eval.py), so held-out avatars never appear here."""
    n_uniform_store: int = 4096
    """Uniform points stored per avatar."""
    n_near_store: int = 8192
    """Near-surface points stored per avatar."""
    n_face_store: int = 0
    """Extra near-surface points per avatar drawn inside ``FACE_BOX`` (eyes, brows, lips, frames)."""
    shard_size: int = 64
    """Avatars per data shard (the data stage's unit of resumption)."""
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    """Tri-plane and decoder shape."""
    decoder_fit: FitConfig = field(default_factory=lambda: FitConfig(steps=400, n_uniform=128, n_near=256))
    """Joint fitting of decoder + planes (decoder stage)."""
    fit: FitConfig = field(
        default_factory=lambda: FitConfig(steps=150, n_uniform=128, n_near=256, lr_planes=3e-2)
    )
    """Per-avatar plane fitting with the decoder frozen (fit stage)."""
    fit_group: int = 128
    """Avatars fitted together in one batch (the fit stage's unit of resumption)."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    """The denoiser's shape and noise schedule."""
    diffusion_train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    """Diffusion optimisation settings."""
    checkpoint_seconds: float = 90.0
    """Write a checkpoint at least this often (seconds)."""
    threads: int = 2
    """torch CPU threads."""


def preset(name: str) -> TrainConfig:
    """The named configuration: ``smoke`` (seconds, for tests), ``cpu`` (this laptop-class CPU), ``gpu``."""
    if name == "cpu":
        # Sized for a shared, busy 2-core CPU: about 15 min decoder, 15 min fitting, 70 min diffusion
        # (the shipped v3: 6,000 steps at 0.6-0.75 s each, one thread).
        return TrainConfig(
            n_avatars=1280,
            decoder_avatars=96,
            triplane=TriplaneConfig(channels=8, resolution=32, hidden=64, layers=1),
            decoder_fit=FitConfig(steps=300, n_uniform=96, n_near=192),
            fit=FitConfig(steps=60, n_uniform=64, n_near=160, lr_planes=3e-2),
            diffusion=DiffusionConfig(base_channels=32, channel_mults=(1, 2, 2), patch=2, cond_dim=128),
            diffusion_train=DiffusionTrainConfig(steps=6000, batch_size=16, lr=1e-3, warmup=50, ema=0.995),
            # One thread: on an oversubscribed CPU a second thread mostly waits at barriers
            # (measured: batch-8 step 1.1 s with one thread, over 60 s with two).
            threads=1,
        )
    if name == "cpu4":
        # Model v4: engine v2 data with part labels, 64^2 planes foveated on the face, a decoder
        # that also labels parts; the denoiser works on 32^2 poolings of the residual.
        return TrainConfig(
            n_avatars=1536,
            decoder_avatars=96,
            n_near_store=8192,
            n_face_store=8192,
            triplane=TriplaneConfig(
                channels=8, resolution=64, hidden=64, layers=2, focus=FACE_BOX, parts=len(PART_NAMES)
            ),
            decoder_fit=FitConfig(steps=400, n_uniform=96, n_near=256),
            fit=FitConfig(steps=80, n_uniform=64, n_near=224, lr_planes=3e-2),
            diffusion=DiffusionConfig(
                base_channels=32, channel_mults=(1, 2, 2), patch=2, cond_dim=128, downsample=2
            ),
            diffusion_train=DiffusionTrainConfig(steps=4000, batch_size=16, lr=1e-3, warmup=50, ema=0.995),
            threads=1,
        )
    if name == "smoke":
        tp = TriplaneConfig(
            channels=4, resolution=8, hidden=16, layers=1, focus=FACE_BOX, parts=len(PART_NAMES)
        )
        return TrainConfig(
            n_avatars=6,
            decoder_avatars=4,
            n_uniform_store=256,
            n_near_store=512,
            n_face_store=256,
            shard_size=4,
            triplane=tp,
            decoder_fit=FitConfig(steps=6, n_uniform=32, n_near=64),
            fit=FitConfig(steps=4, n_uniform=32, n_near=64),
            fit_group=4,
            diffusion=DiffusionConfig(
                base_channels=8, channel_mults=(1, 2), patch=2, cond_dim=16, time_steps=100, downsample=2
            ),
            diffusion_train=DiffusionTrainConfig(steps=3, batch_size=4),
            checkpoint_seconds=0.0,
            threads=1,
        )
    if name == "gpu":
        return TrainConfig(
            n_avatars=20000,
            decoder_avatars=1024,
            triplane=TriplaneConfig(channels=16, resolution=64, hidden=128, layers=2),
            decoder_fit=FitConfig(steps=5000, n_uniform=1024, n_near=4096),
            fit=FitConfig(steps=600, n_uniform=1024, n_near=4096),
            fit_group=512,
            diffusion=DiffusionConfig(base_channels=128, channel_mults=(1, 2, 2, 4), patch=2),
            diffusion_train=DiffusionTrainConfig(steps=200_000, batch_size=64, lr=1e-4),
            threads=8,
        )
    raise ValueError(f"unknown config {name!r}; use one of: smoke, cpu, cpu4, gpu")


class OutOfTime(Exception):
    """The run's time budget is spent; progress is saved and the stage resumes next run."""


@dataclass
class Budget:
    """Wall-clock budget of one run."""

    deadline: float
    log: Any = print

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime

    def left(self) -> float:
        return self.deadline - time.monotonic()


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename, so a kill never leaves half a checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def set_identity(base: int, i: int) -> tuple[AvatarAttributes, int]:
    """Attributes and engine seed of avatar ``i`` of the set ``base`` (training, held-out, classifier)."""
    return sample_attributes(np.random.default_rng([base, i])), base * 100000 + i


def avatar_identity(cfg: TrainConfig, i: int, base: int | None = None) -> tuple[AvatarAttributes, int]:
    """Attributes and engine seed of training avatar ``i`` (or of another set with ``base``)."""
    return set_identity(cfg.seed_base if base is None else base, i)


def make_points(
    attrs: AvatarAttributes, seed: int, n_uniform: int, n_near: int, n_face: int = 0
) -> dict[str, np.ndarray]:
    """Supervision points of one engine avatar; ``n_face`` more near-surface ones in ``FACE_BOX``."""
    from core.avatar.procedural.engine import AvatarField

    rng = np.random.default_rng([seed, 17])
    field = AvatarField(attrs, seed=seed)
    pts = sample_field_points(field, n_uniform, n_near, rng)
    if n_face:
        face = _Boxed(field, np.array(FACE_BOX, np.float32))
        more = sample_field_points(face, 1, n_face, rng)
        for k in ("near_xyz", "near_sdf", "near_rgb", "near_part"):
            pts[k] = np.concatenate([pts[k], more[k]])
    return pts


class _Boxed:
    """A field seen through a smaller bounding box (for sampling points where the detail is)."""

    def __init__(self, field: Any, box: np.ndarray) -> None:
        self.field, self.bbox_min, self.bbox_max = field, box[:, 0], box[:, 1]
        self.value, self.albedo, self.nearest_part = field.value, field.albedo, field.nearest_part


# ---------------------------------------------------------------------------------------
# Stage 1: data.


def stage_data(cfg: TrainConfig, work: Path, budget: Budget) -> None:
    """Write shards of supervision points: data/shard_XXXX.npz, one per ``shard_size`` avatars."""
    out = work / "data"
    out.mkdir(parents=True, exist_ok=True)
    n_shards = -(-cfg.n_avatars // cfg.shard_size)
    for s in range(n_shards):
        path = out / f"shard_{s:04d}.npz"
        if path.exists():
            continue
        budget.check()
        t0 = time.monotonic()
        ids = range(s * cfg.shard_size, min((s + 1) * cfg.shard_size, cfg.n_avatars))
        cols: dict[str, list[np.ndarray]] = {k: [] for k in (*POINT_KEYS, "attrs", "seeds")}
        for i in ids:
            attrs, seed = avatar_identity(cfg, i)
            pts = make_points(attrs, seed, cfg.n_uniform_store, cfg.n_near_store, cfg.n_face_store)
            for k in POINT_KEYS:
                v = pts[k]
                if k == "near_rgb":
                    v = (v * 255).round().astype(np.uint8)
                cols[k].append(
                    v.astype(np.uint8) if k == "near_part" else v if k == "near_rgb" else v.astype(np.float16)
                )
            cols["attrs"].append(attrs.indices())
            cols["seeds"].append(np.int64(seed))
        tmp = out / f"shard_{s:04d}.tmp.npz"
        np.savez(tmp, **{k: np.stack(v) for k, v in cols.items()})
        os.replace(tmp, path)
        budget.log(f"data: shard {s + 1}/{n_shards} ({len(ids)} avatars, {time.monotonic() - t0:.1f} s)")


def load_points(work: Path, cfg: TrainConfig, lo: int, hi: int) -> tuple[PointSet, np.ndarray]:
    """Points of avatars [lo, hi) as float32 tensors, and their attribute indices (n, A)."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (*POINT_KEYS, "attrs")}
    for s in range(lo // cfg.shard_size, -(-hi // cfg.shard_size)):
        path = work / "data" / f"shard_{s:04d}.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; run the data stage first (--stage data)")
        with np.load(path) as z:
            a = max(lo - s * cfg.shard_size, 0)
            b = min(hi - s * cfg.shard_size, cfg.shard_size)
            for k in cols:
                if k in z.files:  # shards from before part labels have no near_part
                    cols[k].append(z[k][a:b])
    arr = {k: np.concatenate(v) for k, v in cols.items() if v}
    t = {k: torch.from_numpy(arr[k].astype(np.float32)) for k in POINT_KEYS if k in arr}
    t["near_rgb"] = t["near_rgb"] / 255.0
    if "near_part" in t:
        t["near_part"] = t["near_part"].long()
    return PointSet(*(t.get(k) for k in POINT_KEYS)), arr["attrs"]


def _lr_scale(step: int, total: int) -> float:
    """Cosine decay to 10 % of the base rate."""
    return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(step, total) / total))


# ---------------------------------------------------------------------------------------
# Stage 2: decoder (jointly with the planes of the first ``decoder_avatars`` avatars).


def stage_decoder(cfg: TrainConfig, work: Path, budget: Budget) -> None:
    final = work / "decoder.pt"
    if final.exists():
        return
    ckpt = work / "decoder_ckpt.pt"
    fc, tc = cfg.decoder_fit, cfg.triplane
    pts, _ = load_points(work, cfg, 0, cfg.decoder_avatars)
    n = cfg.decoder_avatars
    decoder = TriplaneDecoder(tc)
    gen = torch.Generator().manual_seed(0)
    planes = torch.nn.Parameter(
        0.01 * torch.randn(n, 3, tc.channels, tc.resolution, tc.resolution, generator=gen)
    )
    opt = torch.optim.Adam(
        [{"params": [planes], "lr": fc.lr_planes}, {"params": decoder.parameters(), "lr": fc.lr_decoder}]
    )
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        decoder.load_state_dict(state["decoder"])
        planes.data.copy_(state["planes"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step = state["step"]
        budget.log(f"decoder: resuming at step {step}")

    def save() -> None:
        save_atomic(
            {
                "decoder": decoder.state_dict(),
                "planes": planes.detach(),
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "step": step,
            },
            ckpt,
        )

    last_save = time.monotonic()
    t0 = time.monotonic()
    try:
        while step < fc.steps:
            budget.check()
            scale = _lr_scale(step, fc.steps)
            opt.param_groups[0]["lr"] = fc.lr_planes * scale
            opt.param_groups[1]["lr"] = fc.lr_decoder * scale
            loss = fit_loss(decoder, planes, pts.draw(fc.n_uniform, fc.n_near, gen), fc)
            opt.zero_grad(set_to_none=True)
            (loss.total / n).backward()
            opt.step()
            step += 1
            if step % 25 == 0 or step == fc.steps:
                budget.log(
                    f"decoder: step {step}/{fc.steps} sdf {float(loss.sdf):.4f} rgb {float(loss.rgb):.4f} "
                    f"tv {float(loss.tv):.4f} l2 {float(loss.l2):.4f} ({(time.monotonic() - t0) / step:.2f} s/step)"
                )
            if time.monotonic() - last_save > cfg.checkpoint_seconds:
                save()
                last_save = time.monotonic()
    except OutOfTime:
        save()
        raise
    save_atomic(
        {"decoder": decoder.state_dict(), "planes": planes.detach(), "mean_planes": planes.detach().mean(0)},
        final,
    )
    budget.log("decoder: done")


def load_decoder(cfg: TrainConfig, work: Path) -> tuple[TriplaneDecoder, dict[str, torch.Tensor]]:
    state = torch.load(work / "decoder.pt", weights_only=False)
    decoder = TriplaneDecoder(cfg.triplane)
    decoder.load_state_dict(state["decoder"])
    return decoder, state


# ---------------------------------------------------------------------------------------
# Stage 3: fit every avatar's planes with the decoder frozen.


def stage_fit(cfg: TrainConfig, work: Path, budget: Budget) -> None:
    final = work / "planes.pt"
    if final.exists():
        return
    out = work / "planes"
    out.mkdir(exist_ok=True)
    decoder, dstate = load_decoder(cfg, work)
    decoder.requires_grad_(False)
    init = dstate["mean_planes"]
    n_groups = -(-cfg.n_avatars // cfg.fit_group)
    grid_n = 48
    for g in range(n_groups):
        path = out / f"group_{g:04d}.pt"
        if path.exists():
            continue
        budget.check()
        t0 = time.monotonic()
        lo, hi = g * cfg.fit_group, min((g + 1) * cfg.fit_group, cfg.n_avatars)
        pts, attrs = load_points(work, cfg, lo, hi)
        planes = fit_planes(decoder, pts, cfg.fit, init=init, seed=g)
        # Measure reconstruction on the group's first avatar (IoU of insides on a 48^3 grid).
        a0, seed0 = avatar_identity(cfg, lo)
        from core.avatar.procedural.engine import AvatarField

        gt = (
            AvatarField(a0, seed0).value(grid_points(grid_n, cfg.triplane.half_extent)).reshape((grid_n,) * 3)
        )
        iou = occupancy_iou(gt, decode_sdf_grid(decoder, planes[0], grid_n).numpy())
        save_atomic({"planes": planes.half(), "attrs": torch.from_numpy(attrs), "iou": iou}, path)
        budget.log(
            f"fit: group {g + 1}/{n_groups} ({hi - lo} avatars, {time.monotonic() - t0:.0f} s), IoU {iou:.3f}"
        )
        _collect_planes(out, n_groups, work / "planes_partial.pt")
    # planes.pt (all groups) marks the stage as finished; planes_partial.pt lets the diffusion
    # stage start on the groups fitted so far when time is short (KILN_ALLOW_PARTIAL=1).
    os.replace(_collect_planes(out, n_groups, work / "planes_partial.pt"), final)
    budget.log("fit: done")


def _collect_planes(folder: Path, n_groups: int, path: Path) -> Path:
    """Concatenate the fitted groups present in ``folder`` into one file at ``path``."""
    groups = [
        torch.load(folder / f"group_{g:04d}.pt", weights_only=False)
        for g in range(n_groups)
        if (folder / f"group_{g:04d}.pt").exists()
    ]
    save_atomic(
        {
            "planes": torch.cat([x["planes"] for x in groups]),
            "attrs": torch.cat([x["attrs"] for x in groups]),
            "fit_iou": [x["iou"] for x in groups],
        },
        path,
    )
    return path


# ---------------------------------------------------------------------------------------
# Stage 4: diffusion over the fitted planes.


def stage_diffusion(cfg: TrainConfig, work: Path, budget: Budget) -> None:
    from core.avatar.model.diffusion import train_diffusion

    path = work / "planes.pt"
    if not path.exists() and (work / "planes_partial.pt").exists() and os.environ.get("KILN_ALLOW_PARTIAL"):
        path = work / "planes_partial.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; finish the fit stage first (--stage fit)")
    data = torch.load(path, weights_only=False)
    budget.log(f"diffusion: training on {len(data['planes'])} tri-planes from {path.name}")
    train_diffusion(
        data["planes"].float(),
        data["attrs"].long(),
        cfg.diffusion,
        cfg.diffusion_train,
        ckpt=work / "diffusion_ckpt.pt",
        checkpoint_seconds=cfg.checkpoint_seconds,
        check=budget.check,
        log=budget.log,
    )


# ---------------------------------------------------------------------------------------
# Export: the shipped weights.


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of ``asdict(TrainConfig)`` (the ``config.json`` a run writes into its work folder)."""
    diff = dict(d["diffusion"], channel_mults=tuple(d["diffusion"]["channel_mults"]))
    return TrainConfig(
        **{
            k: v
            for k, v in d.items()
            if k not in ("triplane", "decoder_fit", "fit", "diffusion", "diffusion_train")
        },
        triplane=TriplaneConfig(**d["triplane"]),
        decoder_fit=FitConfig(**d["decoder_fit"]),
        fit=FitConfig(**d["fit"]),
        diffusion=DiffusionConfig(**diff),
        diffusion_train=DiffusionTrainConfig(**d["diffusion_train"]),
    )


def export(
    cfg: TrainConfig,
    work: Path,
    out: Path,
    name: str = "model",
    default_guidance: float | None = None,
    default_smooth: float | None = None,
    default_surface_smooth: float | None = None,
    complete_unspecified: bool = False,
    default_variation: float | None = None,
) -> Path:
    """Write ``out/{name}.safetensors`` + ``out/{name}.json`` from a finished (or partial) run.

    The shapes come from the run's own ``config.json`` when present, so a run exports correctly
    even after the preset it was started with has changed.
    """
    from safetensors.torch import save_file

    if (work / "config.json").is_file():
        cfg = config_from_dict(json.loads((work / "config.json").read_text()))

    decoder, _ = load_decoder(cfg, work)
    state = torch.load(work / "diffusion_ckpt.pt", weights_only=False)
    tensors = {f"decoder.{k}": v.float().contiguous() for k, v in decoder.state_dict().items()}
    # The EMA weights are what samples well; fp16 halves the file and costs nothing visible.
    tensors |= {f"unet.{k}": v.half().contiguous() for k, v in state["ema"].items()}
    tensors["norm.mean"] = state["norm_mean"].float().contiguous()
    tensors["norm.std"] = state["norm_std"].float().contiguous()
    if state.get("norm_effects") is not None:  # the per-attribute means (about 1.6 M values)
        tensors["norm.effects"] = state["norm_effects"].half().contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / f"{name}.safetensors"))
    meta = {
        "format": "kiln-avatar-triplane-diffusion/1",
        "triplane": asdict(cfg.triplane),
        "diffusion": asdict(cfg.diffusion),
        "attributes": list(ATTRIBUTE_NAMES),
        **({} if default_guidance is None else {"default_guidance": float(default_guidance)}),
        **({} if default_smooth is None else {"default_smooth": float(default_smooth)}),
        **(
            {}
            if default_surface_smooth is None
            else {"default_surface_smooth": float(default_surface_smooth)}
        ),
        **({"complete_unspecified": True} if complete_unspecified else {}),
        **({} if default_variation is None else {"default_variation": float(default_variation)}),
        "training": {
            "n_avatars": cfg.n_avatars,
            "decoder_avatars": cfg.decoder_avatars,
            "seed_base": cfg.seed_base,
            "decoder_steps": cfg.decoder_fit.steps,
            "fit_steps": cfg.fit.steps,
            "diffusion_steps": int(state["step"]),
            "diffusion_batch": cfg.diffusion_train.batch_size,
        },
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out / f"{name}.safetensors"


def _stop_on_sigterm() -> None:
    """Turn SIGTERM (``kill PID``) into OutOfTime, so a stopped run saves its checkpoint first."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise OutOfTime

    signal.signal(signal.SIGTERM, handler)


def run(stage: str, cfg: TrainConfig, work: Path, max_minutes: float, log: Any = print) -> bool:
    """Run ``stage`` (or all stages in order) until done or out of time; True when finished."""
    torch.set_num_threads(cfg.threads)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    budget = Budget(time.monotonic() + 60 * max_minutes, log)
    fns = {"data": stage_data, "decoder": stage_decoder, "fit": stage_fit, "diffusion": stage_diffusion}
    todo = STAGES if stage == "all" else (stage,)
    try:
        for s in todo:
            fns[s](cfg, work, budget)
    except OutOfTime:
        log(f"out of time in stage {s}; progress saved, run the same command again to continue")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.avatar.model.train", description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=[*STAGES, "all", "export"], default="all")
    ap.add_argument(
        "--work", type=Path, required=True, help="folder for data sets and checkpoints (not in git)"
    )
    ap.add_argument("--config", choices=["smoke", "cpu", "cpu4", "gpu"], default="cpu4")
    ap.add_argument(
        "--max-minutes", type=float, default=25.0, help="stop (resumably) after this many minutes"
    )
    ap.add_argument("--diffusion-steps", type=int, default=None, help="override the diffusion step count")
    ap.add_argument("--n-avatars", type=int, default=None, help="override the training set size")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "weights", help="export folder")
    ap.add_argument(
        "--guidance", type=float, default=None, help="export: the guidance scale requests get by default"
    )
    ap.add_argument("--smooth", type=float, default=None, help="export: the default blur of sampled planes")
    ap.add_argument(
        "--surface-smooth",
        type=float,
        default=None,
        help="export: the default blur of the whole generated planes",
    )
    ap.add_argument("--variation", type=float, default=None, help="export: the default sample variation")
    ap.add_argument(
        "--complete",
        action="store_true",
        help="export: by default draw unspecified attributes from the prior per seed (AvatarModel.completed_attributes)",
    )
    args = ap.parse_args(argv)
    cfg = preset(args.config)
    if args.n_avatars is not None:
        cfg = replace(cfg, n_avatars=args.n_avatars)
    if args.diffusion_steps is not None:
        cfg = replace(cfg, diffusion_train=replace(cfg.diffusion_train, steps=args.diffusion_steps))

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    if args.stage == "export":
        path = export(
            cfg,
            args.work,
            args.out,
            default_guidance=args.guidance,
            default_smooth=args.smooth,
            default_surface_smooth=args.surface_smooth,
            complete_unspecified=args.complete,
            default_variation=args.variation,
        )
        log(f"exported {path}")
        return 0
    _stop_on_sigterm()
    return 0 if run(args.stage, cfg, args.work, args.max_minutes, log) else 3


if __name__ == "__main__":
    sys.exit(main())
