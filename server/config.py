"""Server settings: where data lives, how to bind, which engines run, and input limits."""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_data_dir() -> Path:
    """The per-user data folder, as platformdirs would pick it (stdlib only).

    Linux: ``$XDG_DATA_HOME/kiln`` or ``~/.local/share/kiln``; macOS:
    ``~/Library/Application Support/kiln``; Windows: ``%LOCALAPPDATA%\\kiln``.
    """
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "kiln"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "kiln"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # XDG says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "kiln"


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def parse_engine_specs(specs: list[str]) -> dict[str, str]:
    """Parse ``kind=module:function`` entries (``--engine`` flags, ``KILN_EXTRA_ENGINES``).

    Raises:
        ValueError: an entry is not of that form.
    """
    engines: dict[str, str] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        kind, sep, target = spec.partition("=")
        module, colon, func = target.partition(":")
        if not (sep and colon and kind.strip() and module.strip() and func.strip()):
            raise ValueError(
                f"engine spec {spec!r} is not of the form kind=package.module:function, "
                "e.g. my_kind=studio.engines:run_my_job"
            )
        if not kind.strip().replace("_", "").isalnum():
            raise ValueError(f"engine kind {kind!r} must use letters, digits and underscores only")
        engines[kind.strip()] = f"{module.strip()}:{func.strip()}"
    return engines


@dataclass
class ServerConfig:
    """Everything the server needs to start; built from the command line by ``__main__``."""

    data_dir: Path = field(default_factory=default_data_dir)
    """Folder holding the job database and one work folder per job."""
    host: str = DEFAULT_HOST
    """Address to bind; anything but loopback requires ``token``."""
    port: int = DEFAULT_PORT
    """TCP port to bind."""
    token: str | None = None
    """Bearer token every route but /v1/health requires when set."""
    extra_engines: dict[str, str] = field(default_factory=dict)
    """Extra or replacement job kinds, kind -> "module:function" with run_job's signature minus kind."""
    only_kinds: tuple[str, ...] = ()
    """Serve only these kinds; empty = every kind whose engine is installed."""
    text_to_3d_model: str | None = None
    """Diffusion model hub id or local folder for text_to_3d; None = the engine's default."""
    avatar_weights: str | None = None
    """Avatar model folder (model.safetensors + model.json), given to the worker in its EngineSettings;
    None = the model shipped in the repo."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API; empty = no CORS and cross-site requests refused."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra Host header values accepted on a loopback bind (guards against DNS rebinding)."""
    worker_nice: int = 10
    """Scheduling niceness added to the worker process (POSIX), so the API stays responsive."""
    worker_threads: int | None = None
    """torch CPU threads in the worker; None = torch's default (one per core). On a CPU shared
    with other work, 1 can be far faster (measured here: >10x under load ~8 on 2 cores)."""
    cancel_grace_s: float = 10.0
    """Seconds a running job has to stop after a cancel before its worker is killed."""
    max_attempts: int = 3
    """Server stops or kills in a row, each before the job made any progress, after which it is
    failed instead of resumed (it may be what stops the server). Interruptions after progress
    do not count."""
    min_free_mb: float = 200.0
    """Free space (MB) the data folder's disk must keep: below it submissions get 507 and queued
    jobs wait (``--min-free-mb``; 0 turns the floor off)."""
    header_timeout_s: float = 10.0
    """Seconds a connection has to send a request's headers before it is closed."""
    body_timeout_s: float = 15.0
    """Seconds a request body may go without receiving a byte before the connection is closed."""
    max_connections: int = 512
    """Open connections at most; more are answered 503 and closed."""
    max_unauthenticated: int = 32
    """On a non-loopback bind with a token: connections that have not yet sent the token, at most;
    beyond it the oldest of them is closed."""
    max_queued: int = 1000
    """Queued jobs beyond which submissions get 429 (a runaway script cannot fill the disk)."""
    max_upload_bytes: int = 20 * 1024 * 1024
    """Largest accepted photo file."""
    max_image_pixels: int = 40_000_000
    """Largest accepted photo in pixels (width * height), checked before decoding."""
    max_json_bytes: int = 256 * 1024
    """Largest accepted JSON request body."""
    log_level: str = "info"
    """Python logging level name for the server log."""
    workers: int | None = None
    """Local worker processes (``--workers``); None = one per visible CUDA device, or one on a
    CPU-only machine. With ``ray``: jobs run on the cluster at once (None = its GPUs, else CPUs)."""
    gpus: tuple[str, ...] | None = None
    """CUDA device ids, one worker each (``--gpus 0,1,3``); each worker sees only its own."""
    ray: str | None = None
    """Run jobs on a Ray cluster: ``auto`` (the one this machine belongs to) or its address
    (``host:port``); None = local workers (and ray is never imported)."""
    ray_data_dir: Path | None = None
    """Where Ray nodes see the data folder (a shared mount); None = the same path as ``data_dir``."""
    ray_cpus_per_job: float = 1.0
    """CPUs each Ray job asks for."""
    ray_gpus_per_job: float | None = None
    """GPUs each Ray job asks for; None = 1 on a cluster with GPUs, else 0."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if self.ray_data_dir is not None:
            self.ray_data_dir = Path(self.ray_data_dir).expanduser()

    def check(self) -> None:
        """Raise ValueError with what to do when the settings are unsafe or invalid."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"refusing to bind {self.host}: a server reachable from other machines needs a token; "
                "pass --token SECRET (or set KILN_TOKEN), or bind 127.0.0.1"
            )
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is outside 1..65535")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("the token is too short to be a secret; use at least 8 characters")
        if self.cancel_grace_s <= 0:
            raise ValueError("the cancel grace period must be positive seconds")
        if self.min_free_mb < 0:
            raise ValueError("--min-free-mb must be 0 or more megabytes")
        if self.header_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("the header and body timeouts must be positive seconds")
        if self.max_connections < 1 or self.max_unauthenticated < 1:
            raise ValueError("--max-connections and --max-unauthenticated must be 1 or more")
        if self.workers is not None and not 1 <= self.workers <= 256:
            raise ValueError(f"--workers must be 1 to 256, got {self.workers}")
        if self.gpus is not None:
            if not self.gpus or not all(g.isdigit() for g in self.gpus):
                raise ValueError(f"--gpus takes CUDA device numbers, e.g. 0,1,3; got {','.join(self.gpus)!r}")
            if self.workers is not None:
                raise ValueError("pass --workers or --gpus, not both: --gpus starts one worker per GPU")
        if self.ray is not None:
            if not self.ray.strip():
                raise ValueError("--ray takes 'auto' or the cluster's address, e.g. 10.0.0.5:6379")
            if self.gpus is not None:
                raise ValueError("--gpus is for local workers; on Ray each job asks the cluster for a GPU")
            if self.ray_cpus_per_job <= 0 or (
                self.ray_gpus_per_job is not None and self.ray_gpus_per_job < 0
            ):
                raise ValueError("--ray-cpus-per-job must be positive and --ray-gpus-per-job 0 or more")
        if self.worker_threads is not None and not 1 <= self.worker_threads <= 1024:
            raise ValueError(f"--worker-threads must be 1 or more, got {self.worker_threads}")
