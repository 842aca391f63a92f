"""Photo -> avatar: the photo is one more source of attributes for the avatar job."""

from __future__ import annotations

from pathlib import Path

from core.avatar.reading import PhotoReading, read_photo
from core.avatar.reading.photo import PhotoError
from core.pipelines.avatar import generate_avatar_job
from core.pipelines.jobs import EngineSettings, JobError, JobParams
from core.progress import Reporter


def read_job_photo(params: JobParams, work_dir: Path, reporter: Reporter) -> PhotoReading:
    """Read the job's photo (``params.photo_path``, absolute or relative to ``work_dir``).

    Raises:
        JobError: no photo, an unusable photo or no face; nothing is written.
    """
    if not params.photo_path:
        raise JobError("a photo_avatar job needs a photo; upload one with POST /v1/jobs/photo")
    path = Path(params.photo_path)
    if not path.is_absolute():  # the server stores uploads inside the job folder
        path = work_dir / path
    reporter("read_photo", 0.0, "finding the face in the photo")
    try:
        reading = read_photo(path)
    except PhotoError as e:
        raise JobError(str(e)) from e
    used = ", ".join(f"{n}={v}" for n, v in reading.attributes().items()) or "nothing confidently"
    reporter("read_photo", 1.0, f"read from the photo: {used}")
    return reading


def run_photo_avatar_job(
    params: JobParams, work_dir: Path, reporter: Reporter, settings: EngineSettings
) -> dict[str, Path]:
    """The ``photo_avatar`` job: read the photo, then generate as the avatar job does.

    The photo's confident readings are the weakest source: prompt words and explicit attributes
    win over them. ``attributes.json`` is the avatar job's record with the photo reading in it.
    """
    reading = read_job_photo(params, work_dir, reporter.sub(0.0, 0.05))
    return generate_avatar_job(params, work_dir, reporter.sub(0.05, 1.0), settings, photo_reading=reading)
