"""One job from submit to downloaded files, blocking or on a worker thread; free of bpy.

The same `run_job_flow` runs inline in background Blender (where timers never fire) and on a
`JobThread` in the interactive UI, so both paths behave the same. The thread never touches bpy:
it only puts `JobUpdate`s on a queue that the main thread drains.
"""

from __future__ import annotations

import dataclasses
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .client import KilnClient, KilnError
from .protocol import ATTRIBUTES_ARTIFACT, GLB_ARTIFACT, AttributeReport, Job, JobRequest


@dataclass
class JobUpdate:
    """A snapshot sent from the worker to the main thread."""

    job: Job | None = None
    """The latest server view of the job (None before it exists)."""
    files: dict[str, Path] = field(default_factory=dict)
    """Downloaded artifacts by name; filled only on the final update of a succeeded job."""
    error: str = ""
    """A sentence for people when the flow failed or was cancelled; empty otherwise."""
    done: bool = False
    """True on the last update of the flow."""
    report: AttributeReport | None = None
    """How an avatar job read its request (its ``attributes.json``), when the job wrote one."""
    preview: Path | None = None
    """A new preview image of the job, downloaded (the progress image while it runs)."""

    @property
    def ok(self) -> bool:
        return self.done and not self.error and self.job is not None and self.job.state == "succeeded"


@dataclass
class JobSpec:
    """What to run: a new job (request, optional photo) or an existing one by id."""

    request: JobRequest | None = None
    """Parameters of a new job; None to follow ``job_id``."""
    photo: Path | None = None
    """The photo of a photo_avatar job."""
    job_id: str = ""
    """An existing job to follow (e.g. one saved in a .blend)."""
    out_dir: Path = Path(".")
    """Where artifacts are saved."""
    artifacts: tuple[str, ...] = (GLB_ARTIFACT, ATTRIBUTES_ARTIFACT)
    """Artifact names to download when the job succeeds (missing optional ones are skipped)."""
    file_stem: str = "asset"
    """Downloaded files are named ``<file_stem>.<ext>`` (``asset.glb`` -> ``<stem>.glb``)."""


def file_stem_from_text(text: str, default: str = "asset", max_len: int = 40) -> str:
    """A safe file name stem: ``"A woman, red bob!" -> "a_woman_red_bob"``."""
    stem = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:max_len].rstrip("_")
    return stem or default


def artifact_filename(stem: str, artifact: str) -> str:
    """``("red_bob", "asset.glb") -> "red_bob.glb"``; other artifacts keep their base name as suffix."""
    base, _, ext = artifact.rpartition(".")
    return f"{stem}.{ext}" if base == "asset" else f"{stem}_{base}.{ext}"


def run_job_flow(
    client: KilnClient,
    spec: JobSpec,
    on_update: Callable[[JobUpdate], None],
    should_stop: Callable[[], bool] = lambda: False,
    poll_interval: float = 0.5,
    should_detach: Callable[[], bool] = lambda: False,
) -> JobUpdate:
    """Submit (or follow) a job, wait for it, download its artifacts.

    Steps:
        1. Create the job (or read the existing one).
        2. Poll until it is finished; on ``should_stop`` ask the server to cancel it; on
           ``should_detach`` stop following it (it keeps running on the server).
        3. On success, download the wanted artifacts; each file appears only when complete.

    Never raises for server or job failures: the final update carries the error text.
    """
    job: Job | None = None
    try:
        # 1. Create or look up.
        if spec.job_id:
            job = client.get_job(spec.job_id)
        elif spec.request is None:
            raise KilnError("nothing to run: give a job request or a job id")
        elif spec.photo is not None:
            job = client.create_photo_job(spec.photo, spec.request)
        else:
            job = client.create_job(spec.request)
        on_update(JobUpdate(job=job))

        # 2. Wait; a cancel request from the user goes to the server, then we keep polling
        # until the server confirms so the job list never shows a job as cancelled too early.
        cancel_sent = False

        def stop_now() -> bool:
            nonlocal cancel_sent
            if should_stop() and not cancel_sent:
                cancel_sent = True
                client.cancel_job(job.id)
            return should_detach()

        seen = job
        shown = [""]

        def fetch_preview(j: Job) -> Path | None:
            """The job's preview when a new one is out; a failed fetch only skips that image."""
            if not j.preview_version or j.preview_version == shown[0]:
                return None
            try:
                path = client.download_preview(j, Path(spec.out_dir) / f"{spec.file_stem}_preview.png")
            except (KilnError, OSError):
                return None
            shown[0] = j.preview_version
            return path

        def updated(j: Job) -> None:
            nonlocal seen
            seen = j
            on_update(JobUpdate(job=j, preview=fetch_preview(j)))

        def trouble(sentence: str) -> None:
            # The job as last seen, its message saying why nothing moves (the panel shows it).
            on_update(JobUpdate(job=dataclasses.replace(seen, message=sentence)))

        if not job.is_terminal:
            job = client.wait_for_job(
                job.id,
                poll_interval=poll_interval,
                on_update=updated,
                should_stop=stop_now,
                on_trouble=trouble,
            )
        if not job.is_terminal:
            final = JobUpdate(
                job=job, error="stopped following the job; it keeps running on the server", done=True
            )
        elif job.state == "cancelled":
            final = JobUpdate(job=job, error="cancelled", done=True)
        elif job.state != "succeeded":
            final = JobUpdate(
                job=job, error=f"the job failed: {job.error or job.message or 'no reason given'}", done=True
            )
        else:
            # 3. Download.
            files: dict[str, Path] = {}
            for name in spec.artifacts:
                if job.artifact(name) is None:
                    if name == GLB_ARTIFACT:
                        raise KilnError(
                            f"job {job.id} succeeded but has no {name}; the server's log says why"
                        )
                    continue
                dest = Path(spec.out_dir) / artifact_filename(spec.file_stem, name)
                files[name] = client.download_artifact(job.id, name, dest)
            # Read here, off the main thread: the attributes the avatar was made with.
            report = None
            if ATTRIBUTES_ARTIFACT in files:
                report = AttributeReport.from_json(files[ATTRIBUTES_ARTIFACT].read_bytes())
            final = JobUpdate(job=job, files=files, done=True, report=report, preview=fetch_preview(job))
    except (KilnError, ValueError, OSError) as ex:
        final = JobUpdate(job=job, error=str(ex), done=True)
    on_update(final)
    return final


class JobThread:
    """Runs `run_job_flow` on a daemon thread; the main thread calls `drain()` from a timer."""

    def __init__(self, client: KilnClient, spec: JobSpec, poll_interval: float = 0.5):
        self.spec = spec
        self._updates: queue.Queue[JobUpdate] = queue.Queue()
        self._stop = threading.Event()
        self._detach = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(client, spec, poll_interval),
            name="kiln-job",
            daemon=True,
        )

    def _run(self, client: KilnClient, spec: JobSpec, poll_interval: float) -> None:
        try:
            run_job_flow(
                client, spec, self._updates.put, self._stop.is_set, poll_interval, self._detach.is_set
            )
        except Exception as ex:  # a worker that dies without a final update leaves the job "running"
            self._updates.put(
                JobUpdate(job=None, error=f"the job follower crashed: {type(ex).__name__}: {ex}", done=True)
            )

    def start(self) -> JobThread:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the server to cancel; the thread ends once the server confirms."""
        self._stop.set()

    def detach(self) -> None:
        """Stop following the job at the next poll, leaving it running on the server."""
        self._detach.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def drain(self) -> list[JobUpdate]:
        """All updates since the last call, oldest first (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._updates.get_nowait())
            except queue.Empty:
                return out
