"""The FastAPI application: routes of docs/API.md over the job store and the supervisor."""

import asyncio
import hmac
import json
import logging
import mimetypes
import os
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from core.pipelines.jobs import PROGRESS_PREVIEW
from server import __version__
from server.config import LOOPBACK_NAMES, ServerConfig, is_loopback
from server.disk import disk_full_reason, free_mb, is_disk_full
from server.engines import available_kinds, engine_table
from server.guards import BodyLimit, HostOriginGuard, ServerTiming
from server.notify import Notifier
from server.schemas import (
    PRESETS,
    PROMPT_MAX_CHARS,
    Health,
    Info,
    JobList,
    JobOut,
    _attribute_vocab,
    job_request_model,
)
from server.store import CANCELLED, FAILED, RUNNING, STATES, JobRecord, JobStore
from server.supervisor import Supervisor, job_dir
from server.uploads import UploadError, check_photo, guard_pillow

log = logging.getLogger("kiln.server")

CONTENT_TYPES = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".mp4": "video/mp4",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".json": "application/json",
}
SSE_PING_S = 15.0
"""Seconds between keep-alive comments on an idle event stream."""
PHOTO_PATH = "/v1/jobs/photo"

_PHOTO_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["photo"],
                "properties": {
                    "photo": {"type": "string", "format": "binary", "description": "PNG, JPEG or WebP."},
                    "params": {
                        "type": "string",
                        "description": "JSON object with the fields of POST /v1/jobs.",
                    },
                },
            }
        }
    },
}
_ERROR = {"description": "Error", "content": {"application/json": {"schema": {"type": "object"}}}}
DOCS_ASSETS = "/docs-assets"
"""Where Swagger UI's own files are served from (package swagger-ui-bundle), so /docs works offline."""


def _swagger_ui_folder() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    folder = Path(str(swagger_ui_path))
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _check_range(header: str | None, size: int) -> None:
    """Refuse a bad ``Range`` the way every other error is refused: JSON ``detail`` (400 or 416)."""
    if header is None:
        return
    from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

    try:
        FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader as exc:
        raise HTTPException(
            400, f"bad Range header {header[:100]!r}: {exc.content}; send e.g. 'bytes=0-1023'"
        ) from None
    except RangeNotSatisfiable:
        raise HTTPException(
            416,
            f"the range {header[:100]!r} starts past the end of the file ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None


def content_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def preview_file(job: JobRecord, data_dir: Path) -> Path | None:
    """The job's newest preview image: the ``preview.png`` artifact of a succeeded job, else the
    engine's live ``PROGRESS_PREVIEW`` in its folder; None when there is none (yet)."""
    root = job_dir(data_dir, job.id)
    candidates = (
        [root / a.path for a in job.artifacts if a.name == "preview.png"] if job.state == "succeeded" else []
    )
    candidates.append(root / PROGRESS_PREVIEW)
    for path in candidates:
        try:
            if path.is_file() and path.stat().st_size > 0:
                return path
        except OSError:
            continue
    return None


def preview_tag(path: Path) -> str:
    """A version tag of a preview file that changes whenever the engine replaces it."""
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def job_out(job: JobRecord, data_dir: Path | None = None) -> dict[str, Any]:
    """The API's job object; artifacts appear only for a succeeded job. With ``data_dir``,
    ``preview`` names the job's newest preview image and its version (null when none)."""
    artifacts = []
    if job.state == "succeeded":
        artifacts = [
            {
                "name": a.name,
                "content_type": content_type(a.name),
                "size": a.size,
                "url": f"/v1/jobs/{job.id}/artifacts/{a.name}",
            }
            for a in job.artifacts
        ]
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "stage": job.stage,
        "progress": job.progress,
        "eta_seconds": job.eta_seconds,
        "message": job.message,
        "error": job.error,
        "params": job.params,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "artifacts": artifacts,
        "preview": _preview_out(job, data_dir),
    }


def _preview_out(job: JobRecord, data_dir: Path | None) -> dict[str, str] | None:
    path = preview_file(job, data_dir) if data_dir is not None else None
    if path is None:
        return None
    try:
        tag = preview_tag(path)
    except OSError:  # replaced between the two looks
        return None
    return {"url": f"/v1/jobs/{job.id}/preview", "version": tag.strip('"')}


def _validation_error(exc: ValidationError, prefix: tuple[str, ...]) -> RequestValidationError:
    errors = [
        {"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False)
    ]
    return RequestValidationError(errors)


def create_app(config: ServerConfig, store: JobStore | None = None) -> FastAPI:
    """Build the app; the job store and the worker start with its lifespan.

    ``store`` replaces the job store (tests pass one that injects faults).
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    guard_pillow(config.max_image_pixels)
    kinds = available_kinds(config.extra_engines, config.only_kinds)
    table = engine_table(config.extra_engines)
    json_kinds = [k for k in kinds if not table[k].takes_photo]
    photo_kind = next((k for k in kinds if table[k].takes_photo), None)
    JobRequest = job_request_model(json_kinds, table)
    PhotoRequest = job_request_model([photo_kind] if photo_kind else [], table)
    notifier = Notifier()
    store = store if store is not None else JobStore(config.data_dir / "jobs.sqlite3")
    supervisor = Supervisor(store, config, notifier.publish)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        supervisor.start()
        log.info(
            "kiln server %s: data in %s, kinds %s", __version__, config.data_dir, ", ".join(kinds) or "none"
        )
        try:
            yield
        finally:
            await run_in_threadpool(supervisor.stop)

    bearer = HTTPBearer(auto_error=False, description="Needed when the server has a token.")

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if config.token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, config.token.encode()):
            raise HTTPException(
                401,
                "missing or wrong token: send 'Authorization: Bearer <token>' with the token the server was "
                "started with",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def get_job(job_id: str) -> JobRecord:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} on this server; list jobs with GET /v1/jobs")
        return job

    def check_queue() -> None:
        queued = store.count("queued")
        if queued >= config.max_queued:
            raise HTTPException(
                429,
                f"{queued} jobs are already queued; wait for some to finish or cancel some, then resubmit",
            )

    def disk_status() -> dict[str, Any]:
        free = free_mb(config.data_dir)
        reason = supervisor.store_problem or supervisor.space_short()
        return {
            "data_dir": str(config.data_dir),
            "free_mb": round(free, 1),
            "min_free_mb": config.min_free_mb,
            "accepting_jobs": reason is None,
            "reason": reason,
        }

    def check_disk() -> None:
        """507 while the store cannot be written or free space is under the floor."""
        reason = disk_status()["reason"]
        if reason is not None:
            raise HTTPException(507, reason)

    def submit(kind: str, params: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        if params.get("seed") is None:
            params["seed"] = secrets.randbelow(2**31)
        job = store.create(kind, params, job_id=job_id)
        log.info("job %s (%s): submitted -> queued", job.id, kind)
        notifier.publish(job.id)
        supervisor.wake()
        return job_out(job, config.data_dir)

    router = APIRouter(
        prefix="/v1", dependencies=[Depends(require_token)], responses={400: _ERROR, 401: _ERROR}
    )

    @router.get("/info", response_model=Info)
    async def info() -> dict[str, Any]:
        vocab = _attribute_vocab() or {}
        return {
            "version": __version__,
            **{k: supervisor.device.get(k) for k in ("device", "device_name", "device_warning")},
            "worker_threads": supervisor.device.get("torch_threads"),
            "kinds": kinds,
            "engines": {k: table[k].describe() for k in kinds},
            "models": {
                "text_to_3d": config.text_to_3d_model or "engine default",
                "avatar": config.avatar_weights or "shipped weights",
            },
            "queue_length": store.count("queued"),
            "running": supervisor.current_job,
            "worker_pid": supervisor.worker_pid,
            "workers": supervisor.workers_info(),
            "backend": dict(supervisor.backend),
            "attributes": {name: list(values) for name, values in vocab.items()},
            "presets": list(PRESETS),
            "limits": {
                "prompt_chars": PROMPT_MAX_CHARS,
                "upload_bytes": config.max_upload_bytes,
                "image_pixels": config.max_image_pixels,
            },
            "disk": disk_status(),
        }

    @router.post(
        "/jobs",
        status_code=201,
        response_model=JobOut,
        responses={422: _ERROR, 413: _ERROR, 429: _ERROR, 507: _ERROR},
    )
    async def create_job(request: JobRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        check_disk()
        check_queue()
        params = request.model_dump(exclude={"kind"})
        return submit(request.kind, params)

    @router.post(
        "/jobs/photo",
        status_code=201,
        response_model=JobOut,
        openapi_extra={"requestBody": _PHOTO_BODY},
        responses={409: _ERROR, 413: _ERROR, 415: _ERROR, 422: _ERROR, 429: _ERROR, 507: _ERROR},
    )
    async def create_photo_job(request: Request) -> dict[str, Any]:
        """Create a photo_avatar job from a multipart upload: part ``photo``, optional part ``params``."""
        # 1. The route exists only with a photo engine; the form must be multipart.
        if photo_kind is None:
            raise HTTPException(
                409, "this server has no photo_avatar engine installed; see GET /v1/info kinds"
            )
        check_disk()
        check_queue()
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPException(415, "send multipart/form-data with the image in a part named 'photo'")
        form = await request.form(max_files=1, max_fields=1, max_part_size=64 * 1024)
        try:
            # 2. Params: the JSON route's fields; kind is ignored.
            raw = form.get("params") or "{}"
            try:
                loaded = json.loads(raw) if isinstance(raw, str) else None
            except ValueError:
                loaded = None
            if not isinstance(loaded, dict):
                raise RequestValidationError(
                    [
                        {
                            "loc": ["body", "params"],
                            "msg": "params must be a JSON object",
                            "type": "json_invalid",
                        }
                    ]
                )
            loaded.pop("kind", None)
            try:
                params = PhotoRequest.model_validate({"kind": photo_kind, **loaded}).model_dump(
                    exclude={"kind"}
                )
            except ValidationError as exc:
                raise _validation_error(exc, ("body", "params")) from None
            # 3. The photo: size, format, pixels, full decode (off the event loop).
            photo = form.get("photo")
            if not isinstance(photo, UploadFile):
                raise RequestValidationError(
                    [
                        {
                            "loc": ["body", "photo"],
                            "msg": "attach the image file as part 'photo'",
                            "type": "missing",
                        }
                    ]
                )
            data = await photo.read(config.max_upload_bytes + 1)
            try:
                checked = await run_in_threadpool(
                    check_photo, data, config.max_upload_bytes, config.max_image_pixels
                )
            except UploadError as exc:
                raise HTTPException(exc.status, exc.detail) from None
        finally:
            await form.close()
        # 4. Store it in the job folder under a temporary name, then rename, then queue the job.
        job_id = secrets.token_hex(16)
        folder = job_dir(config.data_dir, job_id) / "input"
        rel = f"input/photo.{checked.extension}"

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".photo.{checked.extension}.tmp"
            try:
                tmp.write_bytes(data)
                os.replace(tmp, folder.parent / rel)
            except OSError:
                shutil.rmtree(folder.parent, ignore_errors=True)  # no half upload left behind
                raise

        await run_in_threadpool(write)
        params["photo_path"] = rel
        params["photo"] = {
            "filename": (photo.filename or "")[:200].encode("utf-8", "replace").decode("utf-8"),
            "format": checked.format,
            "width": checked.width,
            "height": checked.height,
            "bytes": len(data),
        }
        return submit(photo_kind, params, job_id=job_id)

    @router.get("/jobs", response_model=JobList)
    async def list_jobs(
        state: Annotated[
            Literal["queued", "running", "succeeded", "failed", "cancelled"] | None, Query()
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        assert state is None or state in STATES
        return {"jobs": [job_out(j, config.data_dir) for j in store.list_jobs(state, limit)]}

    @router.get("/jobs/{job_id}", response_model=JobOut, responses={404: _ERROR})
    async def read_job(job_id: str) -> Response:
        # The hot path of polling clients: serialised directly (the job dict is built from
        # the store's typed record), skipping a pydantic round trip per poll.
        return JSONResponse(job_out(get_job(job_id), config.data_dir))

    @router.get(
        "/jobs/{job_id}/events",
        responses={200: {"content": {"text/event-stream": {}}, "description": "Job events"}, 404: _ERROR},
        response_class=StreamingResponse,
    )
    async def job_events(job_id: str) -> StreamingResponse:
        """Server-sent events: ``event: job`` with the job object on every change; ends when finished."""
        get_job(job_id)

        async def stream() -> AsyncIterator[str]:
            sent = -1
            while True:
                changed = notifier.waiter(job_id)
                job = store.get(job_id)
                if job is None:
                    return  # deleted
                if job.version != sent:
                    sent = job.version
                    yield f"event: job\ndata: {json.dumps(jsonable_encoder(job_out(job, config.data_dir)))}\n\n"
                if job.terminal or notifier.closed:
                    return  # finished, or the server is stopping (the client reconnects)
                try:
                    await asyncio.wait_for(changed.wait(), SSE_PING_S)
                except TimeoutError:
                    yield ": ping\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get(
        "/jobs/{job_id}/artifacts/{name}",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, 404: _ERROR, 409: _ERROR, 416: _ERROR},
    )
    async def read_artifact(job_id: str, name: str, request: Request) -> FileResponse:
        """One finished file; supports ``Range`` (video scrubbing, resumed downloads)."""
        job = get_job(job_id)
        if job.state != "succeeded":
            raise HTTPException(
                409, f"job {job_id} is {job.state}; its files are served once it has succeeded"
            )
        # Only names the engine reported are served, so no request text ever reaches a path.
        artifact = next((a for a in job.artifacts if a.name == name), None)
        if artifact is None:
            names = ", ".join(a.name for a in job.artifacts)
            raise HTTPException(404, f"job {job_id} has no artifact {name!r}; it has: {names}")
        root = job_dir(config.data_dir, job.id).resolve()
        path = (root / artifact.path).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise HTTPException(404, f"the file of artifact {name} is gone from the data folder")
        if request.method in ("GET", "HEAD") and request.headers.get("if-range") is None:
            _check_range(request.headers.get("range"), path.stat().st_size)
        return FileResponse(
            path, media_type=content_type(name), filename=name, content_disposition_type="inline"
        )

    @router.get(
        "/jobs/{job_id}/preview",
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}}, 304: {"description": "Not modified"}, 404: _ERROR},
    )
    async def read_preview(job_id: str, request: Request) -> Response:
        """The job's newest preview image: the engine's progress image while it runs, the
        finished preview after. ``ETag`` is the job object's ``preview.version``; send it back
        in ``If-None-Match`` to get 304 until a new image arrives."""
        job = get_job(job_id)
        path = preview_file(job, config.data_dir)
        if path is None:
            raise HTTPException(404, f"job {job_id} has no preview image yet; poll the job and try again")
        try:
            tag = preview_tag(path)
        except OSError:
            raise HTTPException(404, f"job {job_id}'s preview was being replaced; try again") from None
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag})
        return FileResponse(path, media_type="image/png", headers={"ETag": tag, "Cache-Control": "no-cache"})

    @router.post(
        "/jobs/{job_id}/resume",
        status_code=202,
        response_model=JobOut,
        responses={404: _ERROR, 409: _ERROR, 507: _ERROR},
    )
    async def resume_job(job_id: str) -> dict[str, Any]:
        """Queue a failed or cancelled job again; it continues from the checkpoints it kept
        (e.g. after a full disk: free space, then resume)."""
        before = get_job(job_id)
        if before.state not in (FAILED, CANCELLED):
            raise HTTPException(409, f"job {job_id} is {before.state}; only failed or cancelled jobs resume")
        check_disk()
        check_queue()
        job = store.requeue(job_id)
        if job is None:
            raise HTTPException(409, f"job {job_id} changed meanwhile; read it again")
        log.info("job %s (%s): %s -> queued (resume)", job.id, job.kind, before.state)
        notifier.publish(job_id)
        supervisor.wake()
        return job_out(job, config.data_dir)

    @router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, responses={404: _ERROR})
    async def cancel_job(job_id: str) -> dict[str, Any]:
        get_job(job_id)
        return job_out(_cancel(job_id), config.data_dir)

    def _cancel(job_id: str) -> JobRecord:
        before = get_job(job_id)
        job = store.request_cancel(job_id) or before
        if job.version != before.version:
            if job.state == RUNNING:
                log.info("job %s (%s): cancel requested while running", job.id, job.kind)
                supervisor.cancel(job_id)
            else:
                log.info("job %s (%s): %s -> %s", job.id, job.kind, before.state, job.state)
            notifier.publish(job_id)
        return job

    @router.delete(
        "/jobs/{job_id}",
        status_code=204,
        responses={202: {"model": JobOut, "description": "Active job: cancel requested"}, 404: _ERROR},
    )
    async def delete_job(job_id: str) -> Response:
        """Cancel an active job (202 with the job), or delete a finished one and its files (204)."""
        job = get_job(job_id)
        if not job.terminal:
            return JSONResponse(jsonable_encoder(job_out(_cancel(job_id), config.data_dir)), status_code=202)
        if store.delete(job_id):
            await run_in_threadpool(shutil.rmtree, job_dir(config.data_dir, job_id), True)
            log.info("job %s (%s): deleted", job_id, job.kind)
            notifier.publish(job_id)
        return Response(status_code=204)

    assets = _swagger_ui_folder()
    app = FastAPI(
        title="Kiln server",
        version=__version__,
        description="Local job server: text and photos to textured 3D assets and avatars. See docs/API.md.",
        lifespan=lifespan,
        docs_url=None if assets is not None else "/docs",
    )
    if assets is not None:
        from fastapi.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            # Swagger UI from the server itself, not a CDN: the page works on an offline machine.
            return get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        # A full disk is the operator's to fix: 507 with the folder and free space; anything
        # else is a bug, answered in JSON like every other error.
        io_error = isinstance(exc, OSError | sqlite3.Error)
        if is_disk_full(exc) or (io_error and free_mb(config.data_dir) < max(config.min_free_mb, 1.0)):
            return JSONResponse({"detail": disk_full_reason(config.data_dir)}, status_code=507)
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # Only loc/msg/type (docs/API.md), without FastAPI's echo of the input: an echoed
        # unpaired surrogate would not encode, and a huge input need not travel back.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return Response(json.dumps({"detail": detail}), status_code=422, media_type="application/json")

    @app.get("/v1/health", response_model=Health, tags=["service"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(router)
    app.state.notifier = notifier
    app.state.store = store
    app.state.supervisor = supervisor

    # Outermost first: host/origin, then CORS (only if asked), then body limits.
    app.add_middleware(
        BodyLimit,
        default=config.max_json_bytes,
        by_path={PHOTO_PATH: config.max_upload_bytes + 1024 * 1024},
    )
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Range"],
        )
    hosts = None
    if is_loopback(config.host):
        hosts = {h.lower() for h in (*LOOPBACK_NAMES, config.host, *config.allowed_hosts)}
    app.add_middleware(HostOriginGuard, allowed_hosts=hosts, allowed_origins=set(config.cors_origins))
    app.add_middleware(ServerTiming)
    return app
