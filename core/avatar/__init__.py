"""Avatars: the procedural engine, tri-plane fitting and diffusion, prompt and photo reading."""
