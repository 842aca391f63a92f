"""Text to 3D as DreamFusion: a NeRF rendered from random cameras, pushed by Score Distillation Sampling.

Entry points: ``text_to_3d`` (request -> trained field), ``run_text_to_3d_job`` (the job contract
of ``core.pipelines.jobs``) and a command line::

    python -m core.pipelines.text_to_3d --prompt "a ceramic teapot" --model PATH_OR_ID --preset draft --out DIR
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.fields.nerf import NeRFAssetField, NeRFField, latent_to_rgb
from core.guidance.base import Guidance, GuidanceInput
from core.guidance.stable_diffusion import DEFAULT_MODEL
from core.pipelines.jobs import EngineSettings, JobError, JobParams, OutputOptions
from core.pipelines.text_to_3d_config import (  # re-exported: the engine's public names
    PRESETS,
    TextTo3DConfig,
    TextTo3DError,
    TrainConfig,
    preset_config,
)
from core.progress import ProgressBar, Reporter
from core.render.background import FixedBackground, MLPBackground, RandomSolidBackground
from core.render.cameras import CameraBatch, camera_rays, orbit_cameras, sample_cameras
from core.render.occupancy import OccupancyGrid
from core.render.shading import Shading, albedo_shading, sample_shading
from core.render.volume import RenderOutput, VolumeRenderer

__all__ = [
    "PRESETS",
    "TextTo3DConfig",
    "TextTo3DError",
    "TextTo3DRequest",
    "TextTo3DResult",
    "TrainConfig",
    "Trainer",
    "main",
    "make_asset",
    "preset_config",
    "run_text_to_3d_job",
    "text_to_3d",
]


@dataclass
class TextTo3DRequest:
    """What to make."""

    prompt: str
    """The text describing the object."""
    negative_prompt: str = ""
    """What the object should not look like."""
    seed: int = 0
    """Seeds every random draw; the same request gives the same field."""
    preset: str = "draft"
    """One of ``PRESETS``."""
    guidance_scale: float | None = None
    """Classifier-free guidance scale; None keeps the preset's (100, as DreamFusion)."""
    perp_neg: bool | None = None
    """Perp-Neg on the view-dependent prompts (against many-faced objects); None keeps the preset's (off)."""
    model: str = DEFAULT_MODEL
    """Guidance model: a hub id or a local folder saved with ``save_pretrained``."""
    work_dir: Path | None = None
    """Folder for checkpoints (``checkpoints/``) and the progress preview; None keeps nothing."""
    steps: int | None = None
    """Override of the preset's step count."""
    device: str | None = None
    """Torch device; None picks CUDA when present, else the CPU."""


@dataclass
class TextTo3DResult:
    """A finished run."""

    field: NeRFAssetField
    """The trained field for the asset path (density, Z up, metres)."""
    nerf: NeRFField
    """The trained torch module."""
    steps: int
    """Steps trained in total."""
    resumed_from: int
    """Step the run resumed at from a checkpoint (0 when it started fresh)."""
    loss: float
    """Loss of the last step."""
    preview: Path | None
    """The last progress preview image, if a work folder was given."""
    seconds: float
    """Wall time of this call."""


@dataclass
class StepStats:
    """Timings and numbers of one training step."""

    loss: float
    render_s: float
    guidance_s: float
    backward_s: float
    samples: int
    candidates: int


def _check_request(request: TextTo3DRequest) -> None:
    if not request.prompt or not request.prompt.strip():
        raise TextTo3DError("the prompt is empty; describe the object to make, e.g. 'a ceramic teapot'")
    if request.preset not in PRESETS:
        raise TextTo3DError(f"unknown preset {request.preset!r}; use one of {', '.join(PRESETS)}")
    if request.steps is not None and request.steps < 1:
        raise TextTo3DError(f"steps must be at least 1, got {request.steps}")


def _check_space(config: TextTo3DConfig) -> None:
    if config.space not in ("pixel", "latent"):
        raise TextTo3DError(f"unknown space {config.space!r}; use 'pixel' or 'latent'")
    if config.space == "latent" and config.train.random_background_prob > 0:
        raise TextTo3DError(
            "random solid backgrounds are RGB colours; in latent space set random_background_prob 0"
        )
    if config.space == "latent" and config.background == "fixed" and len(config.background_color) != 4:
        raise TextTo3DError("a fixed background in latent space needs 4 latent values as background_color")
    if config.space == "pixel" and config.background == "fixed" and len(config.background_color) != 3:
        raise TextTo3DError("a fixed background needs an RGB background_color (3 values)")


class Trainer:
    """The DreamFusion loop on one field: sample cameras, render, shade, score, step.

    Every random draw comes from ``self.generator`` so that a run resumed from a
    checkpoint continues exactly as the uninterrupted run would.
    """

    def __init__(self, config: TextTo3DConfig, guidance: Guidance, seed: int, device: str = "cpu") -> None:
        self.config = config
        self.guidance = guidance
        self.device = torch.device(device)
        self.latent = config.space == "latent"
        _check_space(config)
        torch.manual_seed(seed)
        field_config = replace(config.field, color_space="sd_latent") if self.latent else config.field
        self.nerf = NeRFField(field_config).to(self.device)
        self.background: torch.nn.Module = (
            (MLPBackground(channels=4, latent=True) if self.latent else MLPBackground())
            if config.background == "mlp"
            else FixedBackground(config.background_color)
        ).to(self.device)
        self.renderer = VolumeRenderer(config.renderer)
        self.preview_renderer = VolumeRenderer(replace(config.renderer, jitter=False))
        self.occupancy = (
            OccupancyGrid(config.occupancy, config.field.bound).to(self.device)
            if config.occupancy.enabled
            else None
        )
        t = config.train
        groups = [
            {"params": list(self.nerf.encoding.parameters()), "lr": t.lr_encoding},
            {"params": list(self.nerf.mlp.parameters()), "lr": t.lr_mlp},
        ]
        bg_params = list(self.background.parameters())
        if bg_params:
            groups.append({"params": bg_params, "lr": t.lr_mlp})
        self.optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15)
        self.base_lrs = [g["lr"] for g in groups]
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0

    # -- rendering -------------------------------------------------------------------------------------

    def render(
        self,
        cameras: CameraBatch,
        shading: Shading,
        height: int,
        width: int,
        renderer: VolumeRenderer | None = None,
        background_colors: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RenderOutput]:
        """Render B cameras: returns (B, 3, H, W) images in [0, 1] (in latent space (B, 4, H, W)
        latents) and the raw RenderOutput.

        ``background_colors`` (B, 3) replaces the background with one solid colour per camera.
        """
        origins, dirs = camera_rays(cameras, height, width)
        b = len(cameras)
        ray_camera = torch.arange(b, device=self.device).repeat_interleave(height * width)
        shading = Shading(shading.mode, shading.light.to(self.device), shading.ambient.to(self.device))
        out = (renderer or self.renderer).render(
            self.nerf,
            origins.reshape(-1, 3).to(self.device),
            dirs.reshape(-1, 3).to(self.device),
            shading,
            self.background
            if background_colors is None
            else RandomSolidBackground(background_colors.to(self.device), ray_camera),
            ray_camera,
            occupancy=self.occupancy,
            generator=self.generator,
        )
        return out.rgb.view(b, height, width, -1).permute(0, 3, 1, 2), out

    @torch.no_grad()
    def render_view(self, azimuth_deg: float, elevation_deg: float, size: int) -> np.ndarray:
        """An albedo render from a fixed view, (size, size, 3) uint8 (draws no random numbers); a
        latent field's render is shown through the linear approximation of the decoder."""
        cam = orbit_cameras(
            torch.tensor([math.radians(azimuth_deg)]),
            torch.tensor([math.radians(elevation_deg)]),
            torch.tensor([sum(self.config.camera.radius) / 2]),
            torch.tensor([math.radians(sum(self.config.camera.fov_deg) / 2)]),
            self.config.camera,
        )
        img, _ = self.render(cam, albedo_shading(1), size, size, self.preview_renderer)
        rgb = img[0].permute(1, 2, 0)
        rgb = latent_to_rgb(rgb) if self.latent else rgb.clamp(0, 1)
        return (rgb.cpu().numpy() * 255).round().astype(np.uint8)

    def _sync(self) -> None:
        """Wait for the GPU, so that the step's split times the work and not its queueing."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- one step --------------------------------------------------------------------------------------

    def train_step(self, reporter: Reporter | None = None) -> StepStats:
        """One optimisation step; checks ``reporter`` for cancellation between its stages."""
        cfg, t = self.config, self.config.train
        # 1. Learning rates follow an exponential decay in the step.
        factor = t.lr_end_factor ** min(self.step / max(t.steps, 1), 1.0)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = lr * factor
        # 2. Refresh the occupancy grid now and then.
        if self.occupancy is not None and self.step % cfg.occupancy.update_every == 0:
            self.occupancy.update(
                self.nerf.density, self.renderer.step_size(cfg.field.bound), self.step, self.generator
            )
        # 3. Random cameras and shading; render.
        t0 = time.perf_counter()
        cameras = sample_cameras(cfg.camera, t.batch, self.generator)
        shading = sample_shading(cfg.shading, self.step, cameras, self.generator)
        if self.latent:  # latents are not lit: Latent-NeRF renders them unshaded
            shading = albedo_shading(t.batch)
        bg_colors = None
        if t.random_background_prob > 0:
            u = float(torch.rand(1, generator=self.generator))
            colors = torch.rand(t.batch, 3, generator=self.generator)
            bg_colors = colors if u < t.random_background_prob else None
        images, out = self.render(cameras, shading, t.height, t.width, background_colors=bg_colors)
        self._sync()
        t1 = time.perf_counter()
        if reporter is not None:
            reporter.check()
        # 4. Guidance loss plus regularisers.
        result = self.guidance(
            GuidanceInput(images, cameras, shading, self.step, t.steps, cfg.space), self.generator
        )
        loss = result.loss
        if t.entropy_weight > 0:
            a = out.opacity.clamp(1e-5, 1 - 1e-5)
            entropy = -(a * torch.log2(a) + (1 - a) * torch.log2(1 - a)).mean()
            loss = loss + t.entropy_weight * entropy
        if t.opacity_weight > 0:
            loss = loss + t.opacity_weight * out.opacity.mean()
        if t.sparsity_weight > 0:
            loss = loss + t.sparsity_weight * torch.sqrt(out.opacity**2 + 0.01).mean()
        if t.orientation_weight > 0 and out.orientation is not None:
            loss = loss + t.orientation_weight * out.orientation
        self._sync()
        t2 = time.perf_counter()
        if reporter is not None:
            reporter.check()
        # 5. Backward and update.
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self._sync()
        t3 = time.perf_counter()
        return StepStats(float(loss.detach()), t1 - t0, t2 - t1, t3 - t2, out.samples, out.candidates)

    # -- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "nerf": self.nerf.state_dict(),
            "background": self.background.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "occupancy": self.occupancy.state_dict() if self.occupancy is not None else None,
            "generator": self.generator.get_state(),
            "guidance": self.guidance.state_dict() if hasattr(self.guidance, "state_dict") else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.nerf.load_state_dict(state["nerf"])
        self.background.load_state_dict(state["background"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.occupancy is not None and state["occupancy"] is not None:
            self.occupancy.load_state_dict(state["occupancy"])
        self.generator.set_state(state["generator"])
        if state.get("guidance") is not None and hasattr(self.guidance, "load_state_dict"):
            self.guidance.load_state_dict(state["guidance"])  # the loss scale of the fp16 VAE


def _fingerprint(request: TextTo3DRequest, config: TextTo3DConfig) -> str:
    """What a checkpoint must match to be resumed: the request and the full config."""
    return repr((request.prompt, request.negative_prompt, request.seed, request.model, config))


def _load_checkpoint(folder: Path, device: Any) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest checkpoint that loads; a damaged one (cut short by an older version's write on
    a full disk) is skipped for the one before it."""
    for path in sorted(folder.glob("step_*.pt"), reverse=True):
        try:
            return path, torch.load(path, map_location=device, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            print(f"kiln: skipping damaged checkpoint {path}: {exc}", file=sys.stderr)
    return None, None


def _save_checkpoint(folder: Path, trainer: Trainer, fingerprint: str, loss: float, keep: int = 2) -> Path:
    from core.files import write_atomic

    path = folder / f"step_{trainer.step:07d}.pt"
    state = {"fingerprint": fingerprint, "loss": loss, **trainer.state_dict()}
    # Atomic and fsynced: a crash or a full disk mid-write leaves the previous checkpoints whole
    # (a full disk is raised as OSError ENOSPC, which the server reports as such).
    write_atomic(path, lambda handle: torch.save(state, handle))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


def _write_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    tmp = path.with_name(path.stem + ".tmp.png")
    Image.fromarray(image).save(tmp)
    os.replace(tmp, path)
    return path


def load_guidance(request: TextTo3DRequest, config: TextTo3DConfig, device: str) -> Guidance:
    """Stable Diffusion guidance for the request's model, prompt and negative prompt."""
    from core.guidance.stable_diffusion import StableDiffusionGuidance

    return StableDiffusionGuidance(
        request.model, request.prompt, request.negative_prompt, config.sds, device=device
    )


def text_to_3d(
    request: TextTo3DRequest,
    reporter: Reporter | None = None,
    *,
    guidance: Guidance | None = None,
    config: TextTo3DConfig | None = None,
) -> TextTo3DResult:
    """Train a NeRF for a prompt with Score Distillation Sampling.

    Args:
        request: what to make.
        reporter: progress ("train" stage, with step, loss and a preview every
            ``preview_every`` steps) and cancellation (checked several times a step).
        guidance: replaces the Stable Diffusion guidance (tests pass the exact denoiser).
        config: replaces the preset's configuration.

    Raises:
        TextTo3DError: bad request, or a checkpoint from a different request in the work folder.
        core.guidance.base.GuidanceError: the model cannot be loaded.
        core.progress.Cancelled: the reporter asked to stop.
    """
    started = time.perf_counter()
    reporter = reporter or Reporter()
    # 1. Check inputs and settle the configuration.
    _check_request(request)
    config = config or preset_config(request.preset)
    if request.guidance_scale is not None:
        config = replace(config, sds=replace(config.sds, guidance_scale=float(request.guidance_scale)))
    if request.perp_neg is not None:
        config = replace(config, sds=replace(config.sds, perp_neg=bool(request.perp_neg)))
    if request.steps is not None:
        config = replace(config, train=replace(config.train, steps=int(request.steps)))
    device = request.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reporter("load", 0.0, f"loading guidance {request.model}" if guidance is None else "preparing guidance")

    # 2. Guidance and trainer.
    guidance = guidance or load_guidance(request, config, device)
    trainer = Trainer(config, guidance, request.seed, device)
    fingerprint = _fingerprint(request, config)

    # 3. Resume from the last checkpoint of this request, if any.
    ckpt_dir = request.work_dir / "checkpoints" if request.work_dir is not None else None
    resumed_from = 0
    loss = float("nan")
    latest, state = _load_checkpoint(ckpt_dir, device) if ckpt_dir is not None else (None, None)
    if latest is not None and state is not None:
        if state.get("fingerprint") != fingerprint:
            raise TextTo3DError(
                f"{ckpt_dir} holds checkpoints of a different request or configuration; "
                "use a new work folder or delete that one to start over"
            )
        trainer.load_state_dict(state)
        resumed_from = trainer.step
        loss = float(state.get("loss", float("nan")))

    # 4. The loop.
    steps = config.train.steps
    preview_path = None
    while trainer.step < steps:
        reporter.check()
        stats = trainer.train_step(reporter)
        loss = stats.loss
        if not math.isfinite(loss):
            raise TextTo3DError(
                f"the loss became {loss} at step {trainer.step}; lower the guidance scale or learning rates"
            )
        s = trainer.step
        preview = None
        if request.work_dir is not None and (s % config.train.preview_every == 0 or s == steps):
            preview_path = preview = _write_png(
                request.work_dir / "progress.png", trainer.render_view(30.0, 15.0, config.train.preview_size)
            )
        reporter("train", s / steps, f"step {s}/{steps} loss {loss:.4g}", preview)
        if ckpt_dir is not None and (s % config.train.checkpoint_every == 0 or s == steps):
            _save_checkpoint(ckpt_dir, trainer, fingerprint, loss)
    return TextTo3DResult(
        NeRFAssetField(trainer.nerf),
        trainer.nerf,
        trainer.step,
        resumed_from,
        loss,
        preview_path,
        time.perf_counter() - started,
    )


def request_from_params(
    params: JobParams, work_dir: Path | None, settings: EngineSettings | None = None
) -> TextTo3DRequest:
    """A request from the job contract's parameters and the operator's engine settings."""
    settings = settings or EngineSettings()
    return TextTo3DRequest(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        seed=int(params.seed or 0),
        preset=params.preset,
        guidance_scale=params.guidance_scale,
        model=settings.text_model or DEFAULT_MODEL,
        work_dir=work_dir,
        device=settings.device,
    )


def make_asset(
    request: TextTo3DRequest, output: OutputOptions, work_dir: Path, reporter: Reporter
) -> dict[str, Path]:
    """Train (0-85 % of progress), then the asset path (85-100 %); the job and the CLI share it.

    Checkpoints live in ``work_dir / "checkpoints"``; a restarted run resumes from the last one.

    Returns:
        ``asset.glb``, ``preview.png`` and (when turntable frames > 0) ``turntable.mp4`` to
        their paths in ``work_dir``.
    """
    from core.assets import AssetOptions, build_asset
    from core.guidance.stable_diffusion import resolve_model

    # 1. Check everything that can be checked before minutes of training.
    try:
        _check_request(request)
        resolve_model(request.model)
        options = AssetOptions.from_output(output).validate()
    except ValueError as exc:  # TextTo3DError, GuidanceError, AssetError: each says what to do
        raise JobError(str(exc)) from exc

    # 2. Train, then 3. the shared asset path.
    try:
        result = text_to_3d(request, reporter.sub(0.0, 0.85))
        asset = build_asset(result.field, work_dir, options, reporter.sub(0.85, 1.0), name="asset")
    except ValueError as exc:
        raise JobError(str(exc)) from exc
    artifacts = {"asset.glb": asset.glb, "preview.png": asset.preview}
    if asset.video is not None:
        artifacts["turntable.mp4"] = asset.video
    return {name: Path(path) for name, path in artifacts.items()}


def run_text_to_3d_job(
    params: JobParams, work_dir: Path, reporter: Reporter, settings: EngineSettings
) -> dict[str, Path]:
    """The ``text_to_3d`` job (core/pipelines/jobs.py): the guidance model is the operator's."""
    return make_asset(request_from_params(params, work_dir, settings), params.output, work_dir, reporter)


def main(argv: list[str] | None = None) -> int:
    """Command line: train for a prompt and write asset.glb, turntable.mp4 and preview.png to --out."""
    parser = argparse.ArgumentParser(prog="python -m core.pipelines.text_to_3d", description=main.__doc__)
    parser.add_argument("--prompt", required=True, help="what to make, e.g. 'a ceramic teapot'")
    parser.add_argument("--negative-prompt", default="", help="what it should not look like")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local diffusers pipeline folder")
    parser.add_argument(
        "--preset", default="draft", help=f"one of {', '.join(PRESETS)} (cpu: latent space, no VAE)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument(
        "--perp-neg", action="store_true", default=None, help="Perp-Neg view prompts (2x UNet work)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (also holds checkpoints)")
    out = OutputOptions()
    parser.add_argument("--resolution", type=int, default=out.resolution, help="marching-cubes grid")
    parser.add_argument("--texture-size", type=int, default=out.texture_size)
    parser.add_argument("--turntable-frames", type=int, default=out.turntable_frames, help="0 for no video")
    parser.add_argument("--turntable-size", type=int, default=out.turntable_size)
    args = parser.parse_args(argv)
    request = TextTo3DRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        preset=args.preset,
        guidance_scale=args.guidance_scale,
        perp_neg=args.perp_neg,
        model=args.model,
        work_dir=args.out,
        steps=args.steps,
    )
    output = OutputOptions(args.resolution, args.texture_size, args.turntable_frames, args.turntable_size)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        artifacts = make_asset(request, output, args.out, Reporter(ProgressBar(), min_interval=0.2))
    except JobError as exc:
        sys.stderr.write(f"\nerror: {exc}\n")
        return 2
    sys.stderr.write("\n")
    for name, path in artifacts.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
