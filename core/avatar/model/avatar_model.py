"""The shipped avatar model: load weights, generate tri-planes from partial attributes and a seed."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from core.avatar.model.conditioning import condition_from_partial
from core.avatar.model.diffusion import (
    DiffusionConfig,
    PlaneNormalizer,
    TriplaneUNet,
    ddim_sample,
    pool_planes,
    roll_in,
    roll_out,
    upsample_planes,
)
from core.avatar.model.triplane import TriplaneConfig, TriplaneDecoder, TriplaneField
from core.avatar.vocab.attributes import (
    ATTRIBUTE_NAMES,
    AvatarAttributes,
    complete_attributes,
    validate_partial,
)
from core.fields.base import Field

WEIGHTS_DIR = Path(__file__).parent / "weights"
"""Where the repository's trained model lives (model.safetensors + model.json)."""

MAX_BATCH = 64
"""Largest number of avatars one ``generate`` call makes (memory grows linearly with it)."""

DEFAULT_GUIDANCE = 4.0
"""Classifier-free guidance scale of a model whose model.json names none (the first shipped
model: 4 read attributes back better than 2 there). A model records its own in
``model.json`` ("default_guidance"); ``AvatarModel.default_guidance`` is what requests
without a scale get."""

DEFAULT_SMOOTH = 0.5
"""Gaussian sigma (texels) applied to sampled planes' deviation from the mean. Fitted planes are
TV-regularised; a briefly trained denoiser leaves about twice their total variation as fine
noise, which shows as lumps and colour speckles; sigma 0.5 brings it back to the fitted planes'
level (measured: TV 0.055 -> 0.027, fitted planes 0.029). 0 disables."""


DEFAULT_SURFACE_SMOOTH = 0.0
"""Gaussian sigma (texels) applied to the whole generated planes of a model whose model.json names
none (``default_surface_smooth``): off, as the models before it were evaluated."""


def smooth_planes(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of rolled-out planes (B, C, R, 3R), each plane on its own (edges replicated)."""
    if sigma <= 0:
        return x
    r = max(1, int(round(2 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    B, C, R, W = x.shape
    planes = torch.cat(x.chunk(3, dim=-1), dim=0).reshape(-1, 1, R, R)  # (3 B C, 1, R, R)
    planes = F.conv2d(F.pad(planes, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    planes = F.conv2d(F.pad(planes, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return torch.cat(planes.reshape(3, B, C, R, R).unbind(0), dim=-1)


class ModelError(ValueError):
    """The model files are missing or do not match this code; the message says what to do."""


@dataclass
class AvatarModel:
    """A trained tri-plane decoder + denoiser + normalisation statistics.

    Example:
        >>> model = AvatarModel.load()
        >>> planes = model.generate({"hair_style": "bob", "glasses": "round"}, seed=3)
        >>> field = model.field(planes[0])   # a core.fields.Field for the asset path
    """

    decoder: TriplaneDecoder
    unet: TriplaneUNet
    normalizer: PlaneNormalizer
    meta: dict

    @classmethod
    def load(cls, folder: Path | str = WEIGHTS_DIR, name: str = "model") -> AvatarModel:
        """Load ``folder/{name}.safetensors`` and ``folder/{name}.json`` (written by ``core.avatar.model.train``)."""
        folder = Path(folder)
        weights, meta_path = folder / f"{name}.safetensors", folder / f"{name}.json"
        if not weights.is_file() or not meta_path.is_file():
            raise ModelError(
                f"avatar model files not found ({weights}, {meta_path}); train and export one with "
                "`python -m core.avatar.model.train --stage all ...` then `--stage export --out DIR`"
            )
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - install problem
            raise ModelError("the avatar model needs `safetensors`; pip install safetensors") from e
        meta = json.loads(meta_path.read_text())
        known = meta.get("attributes") or []
        # Attributes are only ever appended, so a model trained on a prefix of today's list still
        # works: it conditions on the ones it knows (the rest still steer the prior's draws).
        if not known or list(ATTRIBUTE_NAMES[: len(known)]) != list(known):
            raise ModelError(
                f"{meta_path} was trained for attributes {meta.get('attributes')}, this code has "
                f"{list(ATTRIBUTE_NAMES)}; retrain the model for the current vocabulary"
            )
        tcfg = TriplaneConfig(**meta["triplane"])
        dcfg = DiffusionConfig(
            **{**meta["diffusion"], "channel_mults": tuple(meta["diffusion"]["channel_mults"])}
        )
        tensors = load_file(str(weights))
        decoder = TriplaneDecoder(tcfg)
        if tcfg.resolution % dcfg.downsample:
            raise ModelError(
                f"{meta_path}: plane resolution {tcfg.resolution} is not divisible by downsample {dcfg.downsample}"
            )
        unet = TriplaneUNet(tcfg.channels, tcfg.resolution // dcfg.downsample, dcfg, n_attributes=len(known))
        try:
            decoder.load_state_dict(
                {k[8:]: v.float() for k, v in tensors.items() if k.startswith("decoder.")}
            )
            unet.load_state_dict({k[5:]: v.float() for k, v in tensors.items() if k.startswith("unet.")})
        except RuntimeError as e:
            raise ModelError(f"{weights} does not match {meta_path} ({e}); re-export the model") from e
        effects = tensors.get("norm.effects")
        norm = PlaneNormalizer(
            tensors["norm.mean"].float(),
            tensors["norm.std"].float(),
            None if effects is None else effects.float(),
        )
        return cls(decoder.eval(), unet.eval(), norm, meta)

    @property
    def n_attributes(self) -> int:
        """How many of ``ATTRIBUTE_NAMES`` (a prefix) the model is conditioned on."""
        return len(self.meta["attributes"])

    @property
    def default_guidance(self) -> float:
        """The guidance scale this model samples best with (``model.json``), else DEFAULT_GUIDANCE."""
        return float(self.meta.get("default_guidance", DEFAULT_GUIDANCE))

    @property
    def default_smooth(self) -> float:
        """The blur of sampled planes this model was evaluated with (``model.json``), else DEFAULT_SMOOTH."""
        return float(self.meta.get("default_smooth", DEFAULT_SMOOTH))

    @property
    def default_surface_smooth(self) -> float:
        """The blur of the whole generated planes (``model.json``), else DEFAULT_SURFACE_SMOOTH."""
        return float(self.meta.get("default_surface_smooth", DEFAULT_SURFACE_SMOOTH))

    @property
    def plane_shape(self) -> tuple[int, int, int, int]:
        c = self.decoder.cfg
        return (3, c.channels, c.resolution, c.resolution)

    @property
    def default_variation(self) -> float:
        """How much of the sampled deviation from the attributes' mean is kept (``model.json``), else 1."""
        return float(self.meta.get("default_variation", 1.0))

    @property
    def complete_unspecified(self) -> bool:
        """Whether ``generate`` draws unspecified attributes by default (``model.json``; off for old models)."""
        return bool(self.meta.get("complete_unspecified", False))

    def completed_attributes(
        self, values: Mapping[str, str], seed: int, n: int = 1, complete: bool | None = None
    ) -> list[dict[str, str]]:
        """The attributes each of ``n`` samples for ``seed`` is conditioned on.

        With completion on, every attribute ``values`` leaves open is drawn from the training
        prior (``complete_attributes`` keyed by seed and sample index): a model centred on
        attribute means follows a full description far better than it fills gaps from its null
        tokens (bench/avatar_eval.py, "generated_unconditional"), and the draw is reported, so
        an artist sees what the seed chose and can pin it. Otherwise the partial values, n times.
        """
        validate_partial(dict(values))
        if not (self.complete_unspecified if complete is None else complete):
            return [dict(values) for _ in range(n)]
        return [complete_attributes(dict(values), (int(seed), i)).to_dict() for i in range(n)]

    def initial_noise(self, seed: int, n: int) -> torch.Tensor:
        """The starting noise of ``n`` samples for ``seed`` -> (n, C, R, 3R).

        It depends only on the seed (never on the attributes), so changing one attribute with
        the same seed keeps the rest of the avatar recognisably the same.
        """
        _, C, R, _ = self.plane_shape
        R //= self.unet.cfg.downsample  # the denoiser's base level
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randn((n, C, R, 3 * R), generator=gen)

    @torch.no_grad()
    def generate(
        self,
        attributes: Mapping[str, str] | AvatarAttributes | None = None,
        seed: int = 0,
        n: int = 1,
        guidance_scale: float | None = None,
        steps: int = 25,
        callback: Callable[[int, int], None] | None = None,
        smooth: float | None = None,
        complete: bool | None = None,
        variation: float | None = None,
        surface_smooth: float | None = None,
    ) -> torch.Tensor:
        """Sample tri-planes for (possibly partial) attributes.

        Args:
            attributes: attribute -> value; unspecified attributes vary with the seed.
            seed: the same seed and inputs give the same planes.
            n: number of avatars, 1 .. MAX_BATCH.
            guidance_scale: classifier-free guidance, 1 .. 10 (None = ``default_guidance``).
            steps: DDIM steps, 1 .. 200.
            callback: called with (step, steps) after every DDIM step.
            smooth: Gaussian sigma in texels for the sampled deviation from the centre (0 = none,
                None = the model's ``default_smooth``).
            complete: draw the unspecified attributes from the training prior per seed and
                sample (``completed_attributes``) instead of leaving them to the null tokens;
                None = the model's ``complete_unspecified``.
            variation: scale of the sampled deviation from the attributes' mean, 0 .. 1.5: 0 gives
                the mean avatar of the (completed) attributes, 1 the full sample; None = the
                model's ``default_variation``. Only models centred on attribute means have one.
            surface_smooth: Gaussian sigma in texels for the whole planes, attribute mean
                included (0 = none, None = the model's ``default_surface_smooth``). The mean of
                noisy fitted planes leaves texel-sized lumps and streaks on the surface; 0.75
                smooths them away while the hair keeps its locks. The small facial parts a job
                attaches (``core.avatar.model.attach``) do not depend on it.

        Returns:
            (n, 3, C, R, R) planes for ``field``.
        """
        # 1. Check inputs.
        if not 1 <= int(n) <= MAX_BATCH:
            raise ValueError(
                f"n must be between 1 and {MAX_BATCH} avatars per call, got {n}; split larger batches"
            )
        if guidance_scale is None:
            guidance_scale = self.default_guidance
        if smooth is None:
            smooth = self.default_smooth
        if variation is None:
            variation = self.default_variation
        if surface_smooth is None:
            surface_smooth = self.default_surface_smooth
        if not 0.0 <= float(surface_smooth) <= 4.0:
            raise ValueError(f"surface_smooth must be between 0 and 4 texels, got {surface_smooth}")
        if not 0.0 <= float(variation) <= 1.5:
            raise ValueError(f"variation must be between 0 and 1.5, got {variation}")
        if not 1.0 <= float(guidance_scale) <= 10.0:
            raise ValueError(f"guidance_scale must be between 1 and 10, got {guidance_scale}")
        if not 1 <= int(steps) <= 200:
            raise ValueError(f"steps must be between 1 and 200, got {steps}")
        values = attributes.to_dict() if isinstance(attributes, AvatarAttributes) else dict(attributes or {})
        rows = self.completed_attributes(values, seed, int(n), complete)
        cond = torch.from_numpy(np.stack([condition_from_partial(r) for r in rows]))
        cond = cond[:, : self.n_attributes]
        norm = self.normalizer
        std = norm.std[..., None, None]
        centre = norm.centre(cond)
        ds = self.unet.cfg.downsample
        shift = None
        if norm.effects is not None:  # the unconditional branch's frame (see ddim_sample)
            shift = roll_out(pool_planes((centre - norm.mean) / std, ds))
        # 2. Denoise from the seed's noise.
        x = ddim_sample(
            self.unet, cond, self.initial_noise(seed, n), int(steps), float(guidance_scale), callback, shift
        )
        # 3. Back to planes in the decoder's units (adding the attributes' mean), without the
        #    sampler's leftover fine noise.
        x = smooth_planes(x, smooth)
        if norm.effects is not None:
            x = float(variation) * x
        # 4. A base-level sample goes up to the planes' resolution; the centre holds the detail.
        planes = upsample_planes(roll_in(x), ds) * std + centre
        # 5. Without the texel-sized lumps of the mean of noisy fitted planes.
        if surface_smooth > 0:
            planes = roll_in(smooth_planes(roll_out(planes), float(surface_smooth)))
        return planes

    def field(
        self, planes: torch.Tensor, attributes: Mapping[str, str] | None = None, attach: bool = True
    ) -> Field:
        """One avatar's planes (3, C, R, R) as a Kiln SDF field. Without ``attributes``, the
        generator's own field. With the (completed) ``attributes`` it was made with, the field a
        job makes (``avatar_field``): parts painted in their asked-for colours and, with
        ``attach``, the small parts (eyes, glasses, moustache, brows, lips) from the engine head
        fitted to the generated face."""
        return avatar_field(planes, self.decoder, attributes, attach)


def avatar_field(
    planes: torch.Tensor,
    decoder: TriplaneDecoder,
    attributes: Mapping[str, str] | None = None,
    attach: bool = True,
) -> Field:
    """The field of one generated avatar as a job makes it (see ``AvatarModel.field``).

    A surface the engine head cannot be fitted to (too little of a head) keeps the painted
    generator's field, so a job still gets its avatar."""
    base = TriplaneField(planes, decoder, paint=paint_for(attributes))
    if not attributes or not attach or not decoder.cfg.parts:
        return base
    from core.avatar.model.attach import attach_parts

    try:
        return attach_parts(base, attributes)
    except ValueError:
        return base


PAINTED_PARTS = ("skin", "lips", "brows", "hair", "beard", "moustache", "glasses", "hat", "cloth")
"""Parts painted in their palette colour. Not the eyes: an eye is white, iris and pupil, which the
part labels do not tell apart."""


def paint_for(attributes: Mapping[str, str] | None) -> dict | None:
    """Part -> albedo for an avatar made with ``attributes`` (None: leave the decoded colours).

    The samples' colours drift (grey hair comes out orange-brown even at the attributes' mean),
    while the decoder's part labels hold; so each labelled part takes the engine's palette colour
    of the asked-for value (``vocab.palettes.part_colours``), keeping the decoded shading.
    """
    if not attributes:
        return None
    from core.avatar.vocab.attributes import AvatarAttributes
    from core.avatar.vocab.palettes import part_colours

    known = {f.name for f in dataclasses.fields(AvatarAttributes)}
    a = AvatarAttributes(**{k: v for k, v in attributes.items() if k in known})
    colours = part_colours(a)
    # A part the attributes leave out that the decoder still labels (a patch of "hat" on the
    # hair, "beard" on a shaven chin) takes the colour of what is there instead.
    under_hat = colours["hair"] if a.hair_style != "bald" else colours["skin"]
    left_out = {
        "hat": (a.headwear == "none", under_hat),
        "hair": (a.hair_style == "bald", colours["skin"]),
        "beard": (a.beard in ("none", "stubble"), colours["skin"]),
        "moustache": (a.moustache == "none", colours["skin"]),
        "glasses": (a.glasses == "none", colours["skin"]),
    }
    for part, (absent, instead) in left_out.items():
        if absent:
            colours[part] = instead
    return {k: colours[k] for k in PAINTED_PARTS}


_CACHE: dict[Path, AvatarModel] = {}


def default_model(folder: str | Path | None = None) -> AvatarModel:
    """The model in ``folder``, else in ``$KILN_AVATAR_MODEL`` (for command lines) if set, else the
    shipped one; loaded once per process."""
    key = Path(folder or os.environ.get("KILN_AVATAR_MODEL") or WEIGHTS_DIR).resolve()
    if key not in _CACHE:
        _CACHE[key] = AvatarModel.load(key)
    return _CACHE[key]
