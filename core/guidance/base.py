"""The guidance interface and the Score Distillation Sampling maths its implementations share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from core.guidance.perp_neg import PerpNegConfig
from core.render.cameras import CameraBatch
from core.render.shading import Shading


class GuidanceError(ValueError):
    """Guidance could not be set up; the message says what to do."""


@dataclass
class SDSConfig:
    """Score Distillation Sampling settings (DreamFusion section 3)."""

    guidance_scale: float = 100.0
    """Classifier-free guidance scale; DreamFusion uses about 100."""
    t_range: tuple[float, float] = (0.02, 0.98)
    """Timesteps are drawn from this fraction of the noise schedule at the start."""
    t_max_end: float = 0.5
    """The upper end of the range anneals linearly to this fraction by the last step."""
    weighting: Literal["sds", "uniform"] = "sds"
    """w(t): ``1 - alpha_bar_t`` as DreamFusion ("sds"), or 1."""
    grad_clip: float | None = None
    """Clamp each element of the SDS gradient to [-grad_clip, grad_clip] (None: no clipping, as
    stable-dreamfusion and threestudio; at guidance 100 a clip of 1 turns SDS into a sign update)."""
    perp_neg: bool = False
    """Perp-Neg on the view-dependent prompts (``core.guidance.perp_neg``): the positive prompt
    blends the nearest views by azimuth and the other views are perpendicular negatives, against
    the Janus (many-faced) problem. Twice the UNet work of plain CFG."""
    perp_neg_weights: PerpNegConfig = field(default_factory=PerpNegConfig)
    """Perp-Neg's negative weights by azimuth (threestudio's defaults)."""


@dataclass
class GuidanceInput:
    """A rendered batch and how it was made."""

    images: torch.Tensor
    """(B, 3, H, W) renders in [0, 1], differentiable."""
    cameras: CameraBatch
    """The B cameras (their ``view`` picks the view-dependent prompt)."""
    shading: Shading
    """The shading used for the render."""
    step: int
    """Training step, from 0."""
    total_steps: int
    """Steps of the whole run (for annealing)."""
    space: Literal["pixel", "latent"] = "pixel"
    """"pixel": ``images`` are RGB in [0, 1]. "latent": they are (B, 4, h, w) scaled Stable
    Diffusion latents rendered by the NeRF itself (Latent-NeRF), which the guidance uses as is."""


@dataclass
class GuidanceOutput:
    """A guidance's verdict on a batch."""

    loss: torch.Tensor
    """Scalar whose gradient with respect to the input images (or latents) is the SDS gradient."""
    timesteps: torch.Tensor
    """(B,) the diffusion timesteps used."""
    grad_norm: float
    """Norm of the (clipped) SDS gradient, for logging."""


class Guidance(ABC):
    """Scores renders; ``text_to_3d`` minimises its loss."""

    @abstractmethod
    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> GuidanceOutput:
        """Loss for a rendered batch; random draws come from ``generator`` only."""


def ddpm_alphas_cumprod(
    steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Stable Diffusion's "scaled_linear" schedule: (steps,) cumulative products of 1 - beta."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def sample_timesteps(
    config: SDSConfig,
    step: int,
    total_steps: int,
    num_train_timesteps: int,
    batch: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """(B,) long timesteps uniform in the annealed range ``[t_min, t_max(step)]``."""
    lo, hi = config.t_range
    progress = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    hi = hi + (min(config.t_max_end, hi) - hi) * progress
    hi = max(hi, lo)
    u = torch.rand(batch, generator=generator)
    t = (lo + (hi - lo) * u) * (num_train_timesteps - 1)
    return t.round().long()


def sds_gradient(
    eps_pred: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, config: SDSConfig
) -> torch.Tensor:
    """``w(t) (eps_pred - noise)``, NaN-free and clipped: all (B, C, H, W); alpha_bar is (B,)."""
    w = (1.0 - alpha_bar) if config.weighting == "sds" else torch.ones_like(alpha_bar)
    grad = w.view(-1, 1, 1, 1).to(eps_pred.dtype) * (eps_pred - noise)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if config.grad_clip is not None:
        grad = grad.clamp(-config.grad_clip, config.grad_clip)
    return grad


def sds_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """A scalar whose gradient with respect to ``x`` is ``grad / B`` (the SDS trick).

    ``0.5 * |x - stopgrad(x - grad)|^2`` differentiates to ``grad``; summing over pixels and
    averaging over the batch keeps its scale independent of the batch size.
    """
    # The target is formed in fp32: in fp16 the rounding of ``x - grad`` is as large as the
    # gradient itself where it is small (late steps, small t).
    xf = x.float()
    target = (xf - grad.float()).detach()
    return 0.5 * ((xf - target) ** 2).sum() / x.shape[0]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward into ``dtype``; backward multiplies the gradient by ``scale`` in fp32."""

    @staticmethod
    def forward(ctx, x, scale, dtype, scaler):  # type: ignore[override]
        ctx.scale, ctx.in_dtype, ctx.scaler = scale, x.dtype, scaler
        return x.to(dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        g = g.float() * ctx.scale
        # The unscaling end checks for overflow, as GradScaler does.
        if ctx.scaler is not None and not bool(torch.isfinite(g).all()):
            ctx.scaler.found_inf = True
            g = torch.zeros_like(g)
        return g.to(ctx.in_dtype), None, None, None


class LossScaler:
    """GradScaler-style dynamic loss scaling for a low-precision stretch of the graph.

    ``enter`` casts a fp32 tensor into the low precision (its backward divides by the scale),
    ``leave`` casts the result back to fp32 (its backward multiplies by the scale), so the
    gradients inside (the fp16 VAE encoder) are ``scale`` times larger and do not underflow,
    while the gradient that comes out is the true one. A non-finite gradient at the exit is
    replaced by zeros for that step and halves the scale; ``growth_interval`` clean steps double it.
    """

    def __init__(
        self,
        init_scale: float = 2.0**10,
        growth_interval: int = 100,
        max_scale: float = 2.0**16,
        enabled: bool = True,
    ) -> None:
        self.scale = float(init_scale) if enabled else 1.0
        self.enabled = enabled
        self.growth_interval = growth_interval
        self.max_scale = max_scale
        self.good_steps = 0
        self.found_inf = False

    def enter(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if not self.enabled:
            return x.to(dtype)
        self.update()
        return _ScaleGrad.apply(x, 1.0 / self.scale, dtype, self)

    def leave(self, y: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return y.float()
        return _ScaleGrad.apply(y, self.scale, torch.float32, None)

    def update(self) -> None:
        """Adjust the scale after the previous step's backward (called at each ``enter``)."""
        if self.found_inf:
            self.scale = max(self.scale / 2.0, 1.0)
            self.good_steps = 0
            self.found_inf = False
        else:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale = min(self.scale * 2.0, self.max_scale)
                self.good_steps = 0

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "good_steps": float(self.good_steps)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
