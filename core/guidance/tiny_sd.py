"""A tiny random Stable-Diffusion-style pipeline, built locally and saved like a real one.

Tests and benchmarks load it through the same ``from_pretrained`` path as a hub model, so the
whole guidance code runs without any download. Its outputs are noise, not pictures.
"""

from __future__ import annotations

import string
from pathlib import Path


def _tiny_tokenizer():
    """A CLIP BPE tokenizer over single characters (no download: the vocabulary is made here)."""
    from transformers import CLIPTokenizer

    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
        vocab[s + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        num_train_timesteps=1000,
        clip_sample=False,
        steps_offset=1,  # what SD's own scheduler configs say; 0 makes the pipeline warn
    )


def _text_encoder(tokenizer, **sizes):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **sizes,
        )
    )


def tiny_sd_components(seed: int = 0) -> dict:
    """A random SD-1.x-shaped set of components with a few thousand weights: ``unet``, ``vae``,
    ``text_encoder``, ``tokenizer``, ``scheduler`` (what ``StableDiffusionGuidance.from_components``
    takes). The UNet takes 8x8 latents and the VAE halves the resolution: 16x16 pixels."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    text_encoder = _text_encoder(
        tokenizer,
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
        sample_size=16,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": _scheduler(),
    }


def sd21_base_components(seed: int = 0) -> dict:
    """Random components of SD 2.1-base's exact sizes (UNet 865 M weights, VAE 84 M, OpenCLIP-H
    text encoder 340 M; about 5 GB in fp32), built from their configs with nothing downloaded.

    For timing and memory only: the outputs are noise. The tokenizer is the tiny one (the real
    vocabulary is a download); the text encoder keeps the real 49408-token embedding table.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = _tiny_tokenizer()
    text_encoder = _text_encoder(
        tokenizer,
        vocab_size=49408,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        hidden_act="gelu",
        projection_dim=512,
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=768,
        scaling_factor=0.18215,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": _scheduler(),
    }


def build_tiny_sd_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build the random components of ``tiny_sd_components`` (UNet, VAE, CLIP text encoder,
    tokenizer, DDPM scheduler) and ``save_pretrained`` them into ``folder`` as a pipeline.

    The UNet takes 8x8 latents and the VAE halves the resolution, so the guidance input is
    16x16 pixels. Returns ``folder``.
    """
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **tiny_sd_components(seed),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
