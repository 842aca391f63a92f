"""Perp-Neg (Armandpour et al. 2023) on the view-dependent prompts, weighted as threestudio does.

Plain view-dependent prompting gives each camera one prompt ("..., side view"). Perp-Neg instead
blends the positive prompt's embedding between the two nearest views by azimuth and uses the
other views' prompts as negatives. Only the part of each negative direction that is
perpendicular to the positive direction is subtracted, so a negative prompt that shares the
object (every view prompt does) does not cancel the object itself:

    e_pos = eps(pos) - eps(uncond)
    e_i = eps(neg_i) - eps(uncond)
    eps_hat = eps(uncond) + s * (e_pos + sum_i w_i * perp(e_i, e_pos))

with ``perp(x, y) = x - (<x, y> / <y, y>) y`` per sample, and ``w_i <= 0``. The weights are
shifted exponential decays ``-(a exp(-b r) + c)`` of the interpolation ratio ``r``:

* front to side (|azimuth| < 90 deg): ``r = 1 - |az| / 90`` (1 front, 0 side); positive
  ``r front + (1 - r) side``; negatives front with ``f_fs(r)``, side with ``f_sf(1 - r)``;
* side to back (|az| >= 90 deg): ``r = 2 - |az| / 90`` (1 side, 0 back); positive
  ``r side + (1 - r) back``; negatives side with ``f_sb(r)``, front with ``f_fsb(r)``;
* overhead cameras: the overhead prompt, two dummy negatives of weight 0.

The default constants are threestudio's; ``f_fs(1) = 0``: a camera straight at the front is not
pushed away from the front prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.render.cameras import VIEW_NAMES

FRONT, SIDE, BACK, OVERHEAD = (VIEW_NAMES.index(v) for v in ("front", "side", "back", "overhead"))


@dataclass
class PerpNegConfig:
    """Perp-Neg's negative weights ``a exp(-b r) + c`` (threestudio's defaults)."""

    f_sb: tuple[float, float, float] = (1.0, 0.5, -0.606)
    """Side prompt as a negative between side and back."""
    f_fsb: tuple[float, float, float] = (1.0, 0.5, 0.967)
    """Front prompt as a negative between side and back."""
    f_fs: tuple[float, float, float] = (4.0, 0.5, -2.426)
    """Front prompt as a negative between front and side (zero at the front)."""
    f_sf: tuple[float, float, float] = (4.0, 0.5, -2.426)
    """Side prompt as a negative between front and side (zero at the side)."""


def shifted_exp_decay(abc: tuple[float, float, float], r: torch.Tensor) -> torch.Tensor:
    """``a exp(-b r) + c`` elementwise."""
    a, b, c = abc
    return a * torch.exp(-b * r) + c


def signed_azimuth_deg(azimuth: torch.Tensor) -> torch.Tensor:
    """Radians in [0, 2 pi) (0: the front) -> degrees in [-180, 180)."""
    return (torch.rad2deg(azimuth) + 180.0) % 360.0 - 180.0


@dataclass
class PerpNegPlan:
    """Which embeddings a batch is scored with under Perp-Neg."""

    positive_mix: torch.Tensor
    """(B, views) weights of the view embeddings that make each camera's positive embedding."""
    negative_views: torch.Tensor
    """(B, 2) long: the view prompts used as the two negatives."""
    negative_weights: torch.Tensor
    """(B, 2) their weights ``w_i`` (<= 0 with the default constants; 0 for overhead cameras)."""
    negative_active: torch.Tensor
    """(B, 2) bool: False for the overhead cameras' dummy negatives (scored with the uncond embedding)."""


def perp_neg_plan(azimuth: torch.Tensor, view: torch.Tensor, config: PerpNegConfig) -> PerpNegPlan:
    """The positive blend and the weighted negatives for cameras at ``azimuth`` (B,) radians
    whose view index (into ``VIEW_NAMES``) is ``view`` (B,); all on the CPU in float32."""
    b = azimuth.shape[0]
    az = signed_azimuth_deg(azimuth.float().cpu()).abs()
    view = view.cpu()
    front_side = az < 90.0
    r = torch.where(front_side, 1.0 - az / 90.0, 2.0 - az / 90.0)
    mix = torch.zeros(b, len(VIEW_NAMES))
    mix[:, FRONT] = torch.where(front_side, r, 0.0)
    mix[:, SIDE] = torch.where(front_side, 1.0 - r, r)
    mix[:, BACK] = torch.where(front_side, 0.0, 1.0 - r)
    neg_views = torch.where(
        front_side.unsqueeze(1),
        torch.tensor([FRONT, SIDE]).expand(b, 2),
        torch.tensor([SIDE, FRONT]).expand(b, 2),
    ).clone()
    weights = torch.stack(
        (
            torch.where(front_side, -shifted_exp_decay(config.f_fs, r), -shifted_exp_decay(config.f_sb, r)),
            torch.where(
                front_side, -shifted_exp_decay(config.f_sf, 1.0 - r), -shifted_exp_decay(config.f_fsb, r)
            ),
        ),
        dim=1,
    )
    overhead = view == OVERHEAD
    mix[overhead] = 0.0
    mix[overhead, OVERHEAD] = 1.0
    weights[overhead] = 0.0
    active = (~overhead).unsqueeze(1).expand(b, 2).clone()
    return PerpNegPlan(mix, neg_views, weights, active)


def perpendicular_component(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The part of each sample of ``x`` perpendicular to the same sample of ``y``: (B, ...) each."""
    dims = tuple(range(1, x.dim()))
    dot = (x * y).sum(dims, keepdim=True)
    norm2 = (y * y).sum(dims, keepdim=True).clamp(min=eps)
    return x - dot / norm2 * y


def perp_neg_noise(
    eps_pos: torch.Tensor,
    eps_uncond: torch.Tensor,
    eps_neg: torch.Tensor,
    weights: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Perp-Neg's guided noise prediction.

    Args:
        eps_pos: (B, C, H, W) prediction with the positive embedding.
        eps_uncond: (B, C, H, W) prediction with the unconditional (negative-prompt) embedding.
        eps_neg: (B, K, C, H, W) predictions with the K negative view prompts.
        weights: (B, K) their weights.
        guidance_scale: the classifier-free guidance scale.
    """
    e_pos = eps_pos - eps_uncond
    total = e_pos
    for i in range(eps_neg.shape[1]):
        e_i = eps_neg[:, i] - eps_uncond
        total = total + weights[:, i].view(-1, 1, 1, 1).to(e_pos) * perpendicular_component(e_i, e_pos)
    return eps_uncond + guidance_scale * total
