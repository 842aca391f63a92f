"""The text-to-3D configuration: the optimisation loop, the whole run, and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from core.fields.hashgrid import HashGridConfig
from core.fields.nerf import NeRFFieldConfig
from core.guidance.base import SDSConfig
from core.pipelines.jobs import PRESETS as JOB_PRESETS
from core.render.cameras import CameraConfig
from core.render.occupancy import OccupancyConfig
from core.render.shading import ShadingConfig
from core.render.volume import RendererConfig

PRESETS = JOB_PRESETS
"""The presets of the engine and its command line: the job contract's (with "cpu", latent space)."""


class TextTo3DError(ValueError):
    """A text-to-3D request cannot run; the message says what to do."""


@dataclass
class TrainConfig:
    """The optimisation loop."""

    steps: int = 400
    """Optimisation steps."""
    batch: int = 1
    """Cameras per step."""
    height: int = 64
    """Render height in pixels (renders are resized to the guidance model's input)."""
    width: int = 64
    """Render width in pixels."""
    lr_encoding: float = 5e-2
    """Adam learning rate of the hash grid tables (high: the draft has few steps)."""
    lr_mlp: float = 1e-2
    """Adam learning rate of the MLPs (field and background)."""
    lr_end_factor: float = 0.1
    """Learning rates decay exponentially to this factor of their start by the last step."""
    entropy_weight: float = 1e-3
    """Weight of the binary entropy of ray opacity (pushes rays to empty or solid)."""
    opacity_weight: float = 0.0
    """Weight of the mean ray opacity."""
    sparsity_weight: float = 1.0
    """Weight of threestudio's sparsity term ``mean sqrt(opacity^2 + 0.01)``: a gentle pull of
    every ray toward empty, against fog (threestudio's DreamFusion default weight)."""
    random_background_prob: float = 0.0
    """Chance per step that the background is a random solid colour per camera instead of the
    configured one (threestudio's random background augmentation; 0 is off)."""
    orientation_weight: float = 1e-2
    """Weight of DreamFusion's orientation loss on normals facing away from the camera."""
    checkpoint_every: int = 100
    """Steps between checkpoints (when the request has a work folder)."""
    preview_every: int = 50
    """Steps between progress preview images."""
    preview_size: int = 128
    """Side in pixels of the progress preview."""


@dataclass
class TextTo3DConfig:
    """Everything a text-to-3D run is made of; ``preset_config`` gives the named presets."""

    field: NeRFFieldConfig = dataclasses.field(default_factory=NeRFFieldConfig)
    """The NeRF."""
    renderer: RendererConfig = dataclasses.field(default_factory=RendererConfig)
    """Ray sampling."""
    occupancy: OccupancyConfig = dataclasses.field(default_factory=OccupancyConfig)
    """Empty-space skipping."""
    camera: CameraConfig = dataclasses.field(default_factory=CameraConfig)
    """Training camera ranges."""
    shading: ShadingConfig = dataclasses.field(default_factory=ShadingConfig)
    """Shading schedule."""
    sds: SDSConfig = dataclasses.field(default_factory=SDSConfig)
    """Score Distillation Sampling."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """The loop."""
    background: Literal["mlp", "fixed"] = "mlp"
    """A learned view-direction background (DreamFusion) or a fixed colour."""
    background_color: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Colour of the fixed background (four latent values in latent space)."""
    space: Literal["pixel", "latent"] = "pixel"
    """"pixel": the NeRF renders RGB, which the guidance encodes with the VAE (DreamFusion).
    "latent": the NeRF renders Stable Diffusion's 4 latent channels at the UNet's size (64 for
    SD 2.1-base) and the guidance skips the VAE (Latent-NeRF); every step is unshaded then."""


def preset_config(preset: str) -> TextTo3DConfig:
    """The configuration of a named preset.

    "draft": a GPU draft (64 px renders through the VAE, 400 steps). "cpu": the draft's field in
    latent space, no VAE (Latent-NeRF): the fastest step, for a CPU or a first look; colours
    come from a linear approximation of the decoder. "standard" and "high": GPU runs.

    On a 2-core CPU with an SD-2.1-base-size model (bench/text_to_3d_latent.py, two runs) a
    draft step took 56-59 s and a cpu step 22 s: 400 steps are 6.2-6.6 and 2.4-2.5 hours.
    """
    if preset == "draft":
        return TextTo3DConfig()
    if preset == "cpu":
        return TextTo3DConfig(
            space="latent",
            field=NeRFFieldConfig(color_space="sd_latent"),
            train=TrainConfig(height=64, width=64),
            shading=ShadingConfig(albedo_ratio=1.0),
        )
    if preset == "standard":
        return TextTo3DConfig(
            field=NeRFFieldConfig(
                encoding=HashGridConfig(levels=12, log2_table_size=18, max_resolution=512), hidden=64
            ),
            renderer=RendererConfig(samples_per_ray=128),
            occupancy=OccupancyConfig(resolution=64),
            train=TrainConfig(
                steps=5000,
                height=128,
                width=128,
                lr_encoding=1e-2,
                lr_mlp=1e-3,
                checkpoint_every=500,
                preview_every=250,
            ),
            shading=ShadingConfig(warmup_steps=1000),
        )
    if preset == "high":
        return TextTo3DConfig(
            field=NeRFFieldConfig(
                encoding=HashGridConfig(levels=16, log2_table_size=19, max_resolution=2048), hidden=64
            ),
            renderer=RendererConfig(samples_per_ray=192),
            occupancy=OccupancyConfig(resolution=128),
            train=TrainConfig(
                steps=10000,
                height=256,
                width=256,
                lr_encoding=1e-2,
                lr_mlp=1e-3,
                checkpoint_every=500,
                preview_every=500,
            ),
            shading=ShadingConfig(warmup_steps=2000),
        )
    raise TextTo3DError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
