"""The learned avatar model: tri-plane decoder, diffusion over tri-planes, training, shipped weights.

The loader's names are re-exported here; ``core.avatar.model.triplane``, ``.diffusion``,
``.conditioning`` and ``.train`` hold the parts.
"""

from core.avatar.model.avatar_model import (
    MAX_BATCH,
    WEIGHTS_DIR,
    AvatarModel,
    ModelError,
    default_model,
    smooth_planes,
)

__all__ = ["MAX_BATCH", "WEIGHTS_DIR", "AvatarModel", "ModelError", "default_model", "smooth_planes"]
