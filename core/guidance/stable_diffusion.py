"""Score Distillation Sampling through any diffusers Stable-Diffusion-style pipeline (SD 1.x / 2.x)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.guidance.base import (
    Guidance,
    GuidanceError,
    GuidanceInput,
    GuidanceOutput,
    SDSConfig,
    sample_timesteps,
    sds_gradient,
    sds_loss,
)
from core.render.cameras import VIEW_NAMES

_EXAMPLE_ID = "stabilityai/stable-diffusion-2-1-base"
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _looks_like_path(model: str) -> bool:
    """Local folders are named with a path prefix or separators; hub ids are ``owner/name``."""
    return (
        model.startswith(("/", "./", "../", "~", "."))
        or "\\" in model
        or model.count("/") > 1
        or Path(model).expanduser().exists()
    )


def resolve_model(model: str) -> str:
    """Check a model name and return what ``from_pretrained`` should get.

    Raises:
        GuidanceError: an empty name, a path that does not exist, or a folder that is not a
            Stable-Diffusion-style pipeline.
    """
    if not model or not model.strip():
        raise GuidanceError(
            f"no guidance model given; pass a hub id such as {_EXAMPLE_ID} or a local pipeline folder"
        )
    if not _looks_like_path(model):
        return model
    path = Path(model).expanduser()
    if not path.exists():
        raise GuidanceError(
            f"model path {model!r} does not exist; pass a folder saved with a diffusers pipeline's "
            f"save_pretrained() (it holds model_index.json), or a hub id such as {_EXAMPLE_ID}"
        )
    if not path.is_dir() or not (path / "model_index.json").is_file():
        raise GuidanceError(
            f"{model!r} is not a diffusers pipeline folder (no model_index.json); point --model at the folder "
            "a pipeline's save_pretrained() wrote, or download one with "
            f"`huggingface-cli download {_EXAMPLE_ID} --local-dir DIR`"
        )
    missing = [c for c in _COMPONENTS if not (path / c).is_dir()]
    if missing:
        raise GuidanceError(
            f"{model!r} is a diffusers pipeline but not a Stable-Diffusion-style one (missing {', '.join(missing)}); "
            "use an SD 1.x/2.x-compatible pipeline"
        )
    return str(path)


def _load(cls: Any, name: str, subfolder: str, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(name, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as exc:
        raise GuidanceError(
            f"could not load the {subfolder} of {name!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "without network access, download the model first "
            f"(`huggingface-cli download {name} --local-dir DIR`) and pass DIR"
        ) from exc


class StableDiffusionGuidance(Guidance):
    """SDS with a Stable Diffusion UNet, classifier-free guidance and view-dependent prompts.

    Renders are resized to the model's resolution (UNet sample size x VAE factor, 512 for
    SD 2.1-base) and encoded to latents with gradients, as stable-dreamfusion and
    threestudio do; the SDS gradient ``w(t) (eps_cfg - eps)`` is applied to the latents.
    """

    def __init__(
        self,
        model: str,
        prompt: str,
        negative_prompt: str = "",
        config: SDSConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        try:
            from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise GuidanceError(
                "Stable Diffusion guidance needs diffusers and transformers: pip install -r requirements.txt"
            ) from exc
        self.config = config or SDSConfig()
        self.device = torch.device(device)
        # fp16 halves memory and time on a GPU; CPUs have no fast fp16 matmuls.
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        name = resolve_model(model)

        # 1. Components, each from its subfolder (no safety checker is needed for latents).
        tokenizer = _load(CLIPTokenizer, name, "tokenizer")
        text_encoder = _load(CLIPTextModel, name, "text_encoder", torch_dtype=self.dtype).to(self.device)
        self.vae = _load(AutoencoderKL, name, "vae", torch_dtype=self.dtype).to(self.device)
        self.unet = _load(UNet2DConditionModel, name, "unet", torch_dtype=self.dtype).to(self.device)
        scheduler = _load(DDPMScheduler, name, "scheduler")
        for module in (text_encoder, self.vae, self.unet):
            module.eval().requires_grad_(False)
        if self.device.type == "cuda":
            self.unet.set_attention_slice("auto")
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        # SD 2.x at 768 px predicts v; SDS needs the noise, eps = sqrt(a) v + sqrt(1 - a) x_t.
        self.v_prediction = scheduler.config.prediction_type == "v_prediction"
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(self.unet.config.sample_size) * self.vae_factor

        # 2. Text embeddings: the negative prompt, and the prompt once per view direction.
        prompts = [negative_prompt] + [f"{prompt}, {view} view" for view in VIEW_NAMES]
        tokens = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            emb = text_encoder(tokens.input_ids.to(self.device))[0]
        self.uncond_embedding = emb[:1]
        self.view_embeddings = emb[1:]  # (views, tokens, dim)
        del text_encoder

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> GuidanceOutput:
        b = inp.images.shape[0]
        # 1. Render -> model resolution -> latents, with gradients through the encoder.
        x = F.interpolate(
            inp.images, (self.resolution, self.resolution), mode="bilinear", align_corners=False
        )
        posterior = self.vae.encode((x * 2.0 - 1.0).to(self.dtype)).latent_dist
        eps_sample = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
        latents = (posterior.mean + posterior.std * eps_sample) * self.vae.config.scaling_factor

        # 2. Noise at an annealed random timestep; predict it with and without the prompt.
        t = sample_timesteps(self.config, inp.step, inp.total_steps, self.num_train_timesteps, b, generator)
        t = t.to(self.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        a = self.alphas_cumprod[t]
        with torch.no_grad():
            sa = a.sqrt().view(-1, 1, 1, 1).to(latents.dtype)
            s1a = (1.0 - a).sqrt().view(-1, 1, 1, 1).to(latents.dtype)
            noisy = sa * latents + s1a * noise
            cond = self.view_embeddings[inp.cameras.view.to(self.device)]
            uncond = self.uncond_embedding.expand(b, -1, -1)
            eps = self.unet(
                torch.cat((noisy, noisy)), torch.cat((t, t)), encoder_hidden_states=torch.cat((cond, uncond))
            ).sample
            if self.v_prediction:
                eps = torch.cat((sa, sa)) * eps + torch.cat((s1a, s1a)) * torch.cat((noisy, noisy))
            eps_cond, eps_uncond = eps.chunk(2)
            eps_cfg = eps_uncond + self.config.guidance_scale * (eps_cond - eps_uncond)

        # 3. w(t) (eps_cfg - eps) applied to the latents.
        grad = sds_gradient(eps_cfg.float(), noise.float(), a, self.config)
        return GuidanceOutput(sds_loss(latents, grad.to(latents.dtype)), t.cpu(), float(grad.norm()))
