"""Photo reading: a face photo -> landmarks -> typed features per face region -> attributes.

``read_photo`` is the entry point. Each face region has its own reader module (``skin``,
``shape``, ``hair``, ``lower_face``, ``eyes``) that returns its readings and a typed record of
what it measured; ``readings`` holds the shared types and the calibrated thresholds.
"""

from core.avatar.reading.reader import read_attributes, read_photo
from core.avatar.reading.readings import MIN_CONFIDENCE, PhotoReading, Reading

__all__ = ["MIN_CONFIDENCE", "PhotoReading", "Reading", "read_attributes", "read_photo"]
