"""Command line: ``python -m server`` / ``kiln-server`` starts the Kiln job server."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from server import __version__
from server.config import DEFAULT_HOST, DEFAULT_PORT, ServerConfig, default_data_dir, parse_engine_specs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kiln-server",
        description="Kiln job server: runs text-to-3D and avatar jobs and serves their files over HTTP.",
    )
    p.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s; others need --token)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default %(default)s)")
    p.add_argument(
        "--data-dir", type=Path, default=None, help=f"jobs and files (default {default_data_dir()})"
    )
    p.add_argument(
        "--token",
        default=None,
        help="Bearer token clients must send; visible in the process list, prefer env KILN_TOKEN or --token-file",
    )
    p.add_argument(
        "--token-file", type=Path, default=None, help="read the Bearer token from this file (first line)"
    )
    p.add_argument("--text-model", default=None, help="text_to_3d diffusion model: hub id or local folder")
    p.add_argument("--avatar-weights", default=None, help="avatar model folder (default: shipped)")
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="KIND=MODULE:FUNCTION",
        help="register an extra job kind (repeatable; also env KILN_EXTRA_ENGINES, comma separated)",
    )
    p.add_argument("--kinds", default=None, help="serve only these kinds (comma separated; default: all)")
    p.add_argument(
        "--cors-origin", action="append", default=[], help="browser origin allowed to call the API"
    )
    p.add_argument(
        "--allowed-host", action="append", default=[], help="extra Host header accepted on loopback"
    )
    p.add_argument("--max-queued", type=int, default=1000, help="queued jobs before submissions get 429")
    p.add_argument("--worker-nice", type=int, default=10, help="niceness added to the worker (POSIX)")
    p.add_argument(
        "--worker-threads",
        type=int,
        default=None,
        help="torch CPU threads per job (default: one per core; 1 is best on a CPU shared with other work)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, one job each at a time (default: one per visible CUDA GPU, 1 on CPU)",
    )
    p.add_argument(
        "--gpus",
        default=None,
        help="CUDA devices to use, one worker pinned to each, e.g. 0,1,3 (default: all visible)",
    )
    p.add_argument(
        "--ray",
        default=None,
        metavar="auto|ADDRESS",
        help="run jobs on a Ray cluster: 'auto' or its address host:port (default: local workers)",
    )
    p.add_argument(
        "--ray-data-dir",
        type=Path,
        default=None,
        help="where Ray nodes mount the data folder (default: the same path as --data-dir)",
    )
    p.add_argument("--ray-cpus-per-job", type=float, default=1.0, help="CPUs a Ray job asks for (default 1)")
    p.add_argument(
        "--ray-gpus-per-job",
        type=float,
        default=None,
        help="GPUs a Ray job asks for (default: 1 on a cluster with GPUs, else 0)",
    )
    p.add_argument(
        "--cancel-grace", type=float, default=10.0, help="seconds before a cancelled job is killed"
    )
    p.add_argument(
        "--min-free-mb",
        type=float,
        default=200.0,
        help="free space the data folder's disk must keep; below it submissions get 507 (default %(default)g)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send its request headers (default %(default)g)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=15.0,
        help="seconds a request body may stall without a byte (default %(default)g)",
    )
    p.add_argument(
        "--max-connections", type=int, default=512, help="open connections at most (default %(default)d)"
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        default=32,
        help="non-loopback binds: connections not yet sending the token, at most (default %(default)d)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--version", action="version", version=f"kiln-server {__version__}")
    return p


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    """Parse the command line and environment into a checked ServerConfig (SystemExit on error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        token = args.token or os.environ.get("KILN_TOKEN") or None
        if args.token_file is not None:
            try:
                token = args.token_file.read_text().strip().splitlines()[0].strip()
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read a token from {args.token_file}: {exc}") from None
        # The worker and anything else this process starts must not inherit the secret.
        os.environ.pop("KILN_TOKEN", None)
        engines = parse_engine_specs(os.environ.get("KILN_EXTRA_ENGINES", "").split(","))
        engines.update(parse_engine_specs(args.engine))
        config = ServerConfig(
            data_dir=args.data_dir or default_data_dir(),
            host=args.host,
            port=args.port,
            token=token,
            extra_engines=engines,
            only_kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()) if args.kinds else (),
            text_to_3d_model=args.text_model,
            avatar_weights=args.avatar_weights,
            cors_origins=tuple(args.cors_origin),
            allowed_hosts=tuple(args.allowed_host),
            cancel_grace_s=args.cancel_grace,
            worker_nice=args.worker_nice,
            worker_threads=args.worker_threads,
            max_queued=args.max_queued,
            min_free_mb=args.min_free_mb,
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            max_connections=args.max_connections,
            max_unauthenticated=args.max_unauthenticated,
            log_level=args.log_level,
            workers=args.workers,
            gpus=tuple(g.strip() for g in args.gpus.split(",") if g.strip())
            if args.gpus is not None
            else None,
            ray=args.ray,
            ray_data_dir=args.ray_data_dir,
            ray_cpus_per_job=args.ray_cpus_per_job,
            ray_gpus_per_job=args.ray_gpus_per_job,
        )
        config.check()
    except ValueError as exc:
        parser.exit(2, f"kiln-server: error: {exc}\n")
    return config


def _lock_data_dir(data_dir: Path):
    """Hold an exclusive lock on the data folder for the process's life; exit if another server has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "server.lock", "w")  # noqa: SIM115 - held open until exit
    try:
        import fcntl
    except ImportError:
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(
            f"kiln-server: error: another Kiln server is using {data_dir}; stop it or pass another --data-dir"
        )
    return handle


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, ending open event streams as soon as a stop is asked for.

        Without this, uvicorn waits for every open connection, and an SSE stream stays
        open until its job ends.
        """

        def handle_exit(self, sig: int, frame: object) -> None:
            self.config.app.state.notifier.close()
            super().handle_exit(sig, frame)

    return Server


def main(argv: list[str] | None = None) -> None:
    """Start the server and block until it is stopped (Ctrl-C or SIGTERM)."""
    config = config_from_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    lock = _lock_data_dir(config.data_dir)
    try:
        import uvicorn
    except ImportError:
        sys.exit("kiln-server: error: uvicorn is missing; pip install -r requirements.txt")
    from server.app import create_app
    from server.config import is_loopback
    from server.connections import ConnectionGuard, uvicorn_settings

    app = create_app(config)
    guard = ConnectionGuard(
        header_timeout_s=config.header_timeout_s,
        body_timeout_s=config.body_timeout_s,
        max_connections=config.max_connections,
        max_unauthenticated=None if is_loopback(config.host) else config.max_unauthenticated,
        token=config.token,
    )
    app.state.connection_guard = guard
    logging.getLogger("kiln.server").info("listening on http://%s:%d", config.host, config.port)
    # Keep-alive longer than uvicorn's 5 s: pollers reuse connections, and a connection closed
    # just as a client reuses it surfaces as "server disconnected" on a loaded machine.
    server = _server_class()(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=5,
            # Read deadlines and connection limits: a stalled client is dropped in seconds.
            **uvicorn_settings(guard),
        )
    )
    # uvicorn re-raises the Ctrl-C it handled, so the exit status says how the server stopped.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    lock.close()


if __name__ == "__main__":
    main()
