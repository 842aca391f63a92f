"""Avatars, by concept.

- ``vocab``: the attribute vocabulary, the colour palettes, the prompt parser, and ``resolve``,
  which merges prompt, photo reading and explicit overrides into one set of attributes.
- ``procedural``: the avatar engine (signed distance fields with parts), the oracle the model
  learns from, and synthetic photos of its avatars.
- ``model``: tri-planes, the diffusion over them, training, and the shipped weights.
- ``reading``: photo -> face landmarks -> typed features -> attributes with confidences.
"""
