"""HTTP client for the Kiln server (docs/API.md) on the standard library only, free of bpy."""

from __future__ import annotations

import http.client
import ipaddress
import json
import mimetypes
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .protocol import Job, JobRequest, ServerInfo, error_detail_text, kind_info

DEFAULT_URL = "http://127.0.0.1:8765"
MAX_PHOTO_BYTES = 20 * 1024 * 1024
"""The server refuses larger uploads (413); checked here first so nothing large is sent in vain."""
USER_AGENT = "kiln-blender-addon/0.1"
_CHUNK = 1 << 20


def form_data_filename(name: str) -> str:
    """``name`` as a quoted-string value of a ``filename`` parameter (RFC 7578 section 4.2).

    As browsers do (WHATWG's multipart/form-data encoding): ``"`` -> ``%22``, CR -> ``%0D``,
    LF -> ``%0A``, everything else as is, sent as UTF-8. A quote or line break in a photo's file
    name would otherwise end the header early or start a header of its own. Bytes of a file name
    that are not UTF-8 (``os.fsdecode``'s surrogate escapes) become U+FFFD.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file system decoding made
        raw = name.encode("utf-8", "replace")
    name = raw.decode("utf-8", "replace")
    return name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class KilnError(Exception):
    """Any failure talking to the server; ``str()`` is a sentence saying what to do."""


class ServerUnavailable(KilnError):
    """The server could not be reached (down, wrong URL, connection dropped)."""


class ServerTimeout(KilnError):
    """The server did not answer within the timeout."""


class OnlineAccessDisabled(KilnError):
    """A remote server was asked for while Blender's online access is off."""


class HTTPStatusError(KilnError):
    """The server answered with a 4xx/5xx status."""

    def __init__(self, status: int, detail: str, message: str):
        super().__init__(message)
        self.status = status
        self.detail = detail


def is_loopback_url(url: str) -> bool:
    """True when ``url`` points at this computer (localhost, 127.0.0.0/8, ::1)."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_online_access(url: str, online_access: bool) -> None:
    """Refuse a remote server while Blender's "Allow Online Access" is off; loopback always works."""
    if not online_access and not is_loopback_url(url):
        raise OnlineAccessDisabled(
            f"Blender's online access is off, so Kiln will not contact the remote server {url}. "
            "Turn on Preferences > System > Network > Allow Online Access (or start Blender with "
            "--online-mode), or run the Kiln server on this computer (http://127.0.0.1:8765)."
        )


def normalize_url(url: str) -> str:
    """Strip spaces and trailing slashes; add http:// when no scheme is given."""
    url = url.strip().rstrip("/")
    if not url:
        raise KilnError("the Kiln server URL is empty; set it in Preferences > Add-ons > Kiln")
    if "://" not in url:
        url = "http://" + url
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise KilnError(f"the Kiln server URL {url!r} must start with http:// or https://")
    return url


class KilnClient:
    """Talks to one Kiln server. Thread-safe: each call opens its own connection.

    Args:
        base_url: e.g. ``http://127.0.0.1:8765`` (the ``/v1`` prefix is added here).
        token: bearer token; sent only when not empty.
        timeout: seconds to wait for a connection or an answer to one request.
        download_timeout: seconds of silence tolerated while downloading an artifact.
    """

    def __init__(self, base_url: str, token: str = "", timeout: float = 10.0, download_timeout: float = 60.0):
        self.base_url = normalize_url(base_url)
        self.token = token.strip()
        self.timeout = float(timeout)
        self.download_timeout = float(download_timeout)
        # Loopback must not go through a system proxy (it would answer for 127.0.0.1 itself).
        handlers = [urllib.request.ProxyHandler({})] if is_loopback_url(self.base_url) else []
        self._opener = urllib.request.build_opener(*handlers)

    # -- low level -------------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _open(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float):
        url = self.base_url + path
        request = urllib.request.Request(url, data=body, headers=self._headers(headers), method=method)
        try:
            return self._opener.open(request, timeout=timeout)
        except urllib.error.HTTPError as ex:
            raw = ex.read() if ex.fp is not None else b""
            raise self._status_error(ex.code, raw, method, path) from None
        except urllib.error.URLError as ex:
            raise self._connection_error(ex.reason) from None
        except (TimeoutError, OSError, http.client.HTTPException) as ex:
            raise self._connection_error(ex) from None

    def _status_error(self, status: int, raw: bytes, method: str, path: str) -> HTTPStatusError:
        detail = error_detail_text(raw) or http.client.responses.get(status, "error")
        if status == 401:
            hint = "set the server's token in Preferences > Add-ons > Kiln"
        elif status == 404:
            hint = "the job or file is unknown to this server (deleted, or another server?)"
        elif status == 422:
            hint = "change the named setting"
        elif status >= 500:
            hint = "the server failed; its log has the details"
        else:
            hint = ""
        message = f"Kiln server said {status} to {method} {path}: {detail}"
        return HTTPStatusError(status, detail, f"{message} ({hint})" if hint else message)

    def _connection_error(self, reason: object) -> KilnError:
        if isinstance(reason, TimeoutError | socket.timeout):
            return ServerTimeout(
                f"the Kiln server at {self.base_url} did not answer within {self.timeout:g} s; "
                "it may be busy or stuck. Try again, or raise the timeout in Preferences > Add-ons > Kiln."
            )
        return ServerUnavailable(
            f"cannot reach the Kiln server at {self.base_url} ({reason}). Start it with "
            "`python -m server --port 8765`, or fix the URL in Preferences > Add-ons > Kiln."
        )

    def request_json(
        self, method: str, path: str, payload: Any = None, body: bytes | None = None, content_type: str = ""
    ) -> Any:
        """Send one request and parse the JSON answer (None for 204)."""
        headers = {}
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        with self._open(method, path, body, headers, self.timeout) as response:
            try:
                raw = response.read()
            except (TimeoutError, OSError, http.client.HTTPException) as ex:
                raise self._connection_error(ex) from None
            if response.status == 204 or not raw:
                return None
        try:
            return json.loads(raw)
        except ValueError:
            raise KilnError(
                f"{self.base_url}{path} did not answer with JSON; is {self.base_url} a Kiln server?"
            ) from None

    # -- API -------------------------------------------------------------------------------------

    def health(self) -> bool:
        data = self.request_json("GET", "/v1/health")
        return isinstance(data, dict) and data.get("status") == "ok"

    def info(self) -> ServerInfo:
        data = self.request_json("GET", "/v1/info")
        try:
            if not isinstance(data, dict):
                raise TypeError(f"got {type(data).__name__}")
            return ServerInfo.from_dict(data)
        except (TypeError, ValueError, AttributeError) as ex:
            # Another program on that port answers JSON of its own; say so instead of raising.
            raise KilnError(
                f"{self.base_url}/v1/info did not answer like a Kiln server ({ex}); check the URL"
            ) from None

    def create_job(self, request: JobRequest) -> Job:
        request.validate()
        if kind_info(request.kind).takes_photo:
            raise KilnError("photo avatars need a photo: use create_photo_job(photo, request)")
        return Job.from_dict(self.request_json("POST", "/v1/jobs", payload=request.to_dict()))

    def create_photo_job(self, photo: Path, request: JobRequest) -> Job:
        """Upload ``photo`` (PNG/JPEG/WebP) and start a photo_avatar job with ``request``'s options."""
        photo = Path(photo)
        if not photo.is_file():
            raise KilnError(f"the photo {photo} does not exist; pick an image file")
        size = photo.stat().st_size
        if size > MAX_PHOTO_BYTES:
            raise KilnError(
                f"the photo {photo.name} is {size / 2**20:.1f} MB; the server accepts up to "
                f"{MAX_PHOTO_BYTES / 2**20:.0f} MB, so save a smaller JPEG"
            )
        request.validate()
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(photo.name)[0] or "application/octet-stream"
        params = request.to_dict()
        params.pop("kind", None)
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n'
            f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n".encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
            f'filename="{form_data_filename(photo.name)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            photo.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
        data = self.request_json(
            "POST",
            "/v1/jobs/photo",
            body=b"".join(parts),
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        return Job.from_dict(data)

    def get_job(self, job_id: str) -> Job:
        return Job.from_dict(self.request_json("GET", f"/v1/jobs/{urllib.parse.quote(job_id)}"))

    def list_jobs(self, state: str | None = None, limit: int = 50) -> list[Job]:
        query = urllib.parse.urlencode(
            {k: v for k, v in (("state", state), ("limit", limit)) if v is not None}
        )
        data = self.request_json("GET", f"/v1/jobs?{query}")
        return [Job.from_dict(j) for j in (data or {}).get("jobs", [])]

    def cancel_job(self, job_id: str) -> Job:
        return Job.from_dict(self.request_json("POST", f"/v1/jobs/{urllib.parse.quote(job_id)}/cancel"))

    def delete_job(self, job_id: str) -> None:
        self.request_json("DELETE", f"/v1/jobs/{urllib.parse.quote(job_id)}")

    def download_artifact(self, job_id: str, name: str, dest: Path) -> Path:
        """Stream an artifact to ``dest``; the file appears only once complete (no half files)."""
        path = f"/v1/jobs/{urllib.parse.quote(job_id)}/artifacts/{urllib.parse.quote(name)}"
        return self._download(path, Path(dest), name)

    def download_preview(self, job: Job, dest: Path) -> Path:
        """The job's newest preview image (``job.preview_url``) to ``dest``, replaced whole."""
        if not job.preview_url.startswith("/v1/jobs/"):
            raise KilnError(f"job {job.id} has no preview image yet")
        return self._download(job.preview_url, Path(dest), "the preview")

    def _download(self, path: str, dest: Path, name: str) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        try:
            with self._open("GET", path, None, {"Accept": "*/*"}, self.download_timeout) as response:
                expected = int(response.headers.get("Content-Length") or -1)
                written = 0
                with open(part, "wb") as fh:
                    while chunk := response.read(_CHUNK):
                        fh.write(chunk)
                        written += len(chunk)
            if 0 <= expected != written:
                raise ServerUnavailable(
                    f"the download of {name} stopped after {written} of {expected} bytes; "
                    "the server may have stopped. Try again."
                )
            os.replace(part, dest)
        except (TimeoutError, http.client.HTTPException, ConnectionError) as ex:
            raise self._connection_error(ex) from None
        finally:
            if part.exists():
                part.unlink()
        return dest

    def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_failures: int = 3,
        on_trouble: Callable[[str], None] | None = None,
    ) -> Job:
        """Poll until the job is finished; returns the final job.

        ``on_update`` sees every change of state/stage/progress/message. ``should_stop``
        returning True ends the wait early (the job itself keeps running: call cancel_job).
        Up to ``max_failures`` polls in a row may fail (a server restarting) before the
        connection error is raised; ``on_trouble`` hears of each one at once, as a sentence
        ("... not answering, retrying (1 of 3)"), so a frozen server shows after one timeout.
        """
        start = time.monotonic()
        failures = 0
        last: tuple[Any, ...] | None = None
        while True:
            try:
                job = self.get_job(job_id)
                failures = 0
            except (ServerUnavailable, ServerTimeout) as ex:
                failures += 1
                if failures >= max_failures:
                    raise
                if on_trouble is not None:
                    what = "not answering" if isinstance(ex, ServerTimeout) else "not reachable"
                    on_trouble(
                        f"the Kiln server at {self.base_url} is {what}, retrying ({failures} of {max_failures})"
                    )
                last = None  # the next answer is shown even if the job did not change meanwhile
                job = None
            if job is not None:
                key = (job.state, job.stage, job.progress, job.message, job.preview_version)
                if key != last and on_update is not None:
                    on_update(job)
                last = key
                if job.is_terminal:
                    return job
            if should_stop is not None and should_stop():
                return job if job is not None else self.get_job(job_id)
            if timeout is not None and time.monotonic() - start > timeout:
                raise ServerTimeout(
                    f"job {job_id} did not finish within {timeout:g} s (last state "
                    f"{job.state if job else 'unknown'}); it keeps running on the server"
                )
            time.sleep(poll_interval)
