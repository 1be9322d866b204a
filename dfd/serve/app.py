"""The Starlette application: the page, POST /v1/predict, GET /v1/model, GET /healthz.

POST /v1/predict takes one multipart file (any field name) and answers the entry dfd.predict
--format=json gives for it (200), with "path" the uploaded file's name. ?explain=1 adds "crops" (PNG
data URIs: each face crop with its Grad-CAM heatmap) and "seconds" (for the page). Errors:
  413  the upload is larger than --max_upload_mb (refused while it streams in, nothing kept)
  408  the upload sent nothing for --upload_idle_timeout_s, or took longer than --upload_timeout_s
       (a stalled client would otherwise hold its connection and memory for ever)
  422  the file is not an image or video, cannot be decoded, or has no face: the dfd.predict error entry
  400  no file in the request
  421, 403  a Host name the server is not known by, or a POST from another site's page (dfd.serve.guard)
Uploads are written to a private temporary folder only while they are scored (OpenCV reads videos
from files) and deleted before the answer is sent; the folder is removed when the server stops, and
the folders of killed servers when the next one starts (dfd.serve.uploads). A client that disconnects
mid-upload is one warning line in the log, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import shutil
import threading
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from dfd.preprocess.video_reader import MAX_FRAME_PIXELS
from dfd.serve import guard, page, uploads
from dfd.serve.batcher import Batcher

COPY_CHUNK = 1 << 20
MULTIPART_OVERHEAD = 64 * 1024   # room for the multipart headers around the file
log = logging.getLogger("uvicorn.error")   # the server's own log: its format and level


class UploadRefused(Exception):
    """An upload stopped while it streams in: the answer's status and error."""

    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.error = status, error


def model_description(loaded, options: dict) -> dict:
    return {
        "name": loaded.model.name, "model_file": str(loaded.model_path),
        "kind": "image" if loaded.scores_frames else "video",
        "input": {"shape": list(loaded.input_shape), "dtype": "uint8"},
        "preprocessing": loaded.spec.to_dict(),
        "threshold": loaded.threshold, "threshold_source": loaded.threshold_source,
        "calibration": ({"method": "temperature", "temperature": loaded.temperature,
                         "source": loaded.calibration_source} if loaded.temperature != 1.0 else None),
        "video_frames": options["video_frames"], "aggregate": options["aggregate"],
        "max_upload_mb": options["max_upload_mb"],
    }


def _extension(filename: str) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def check_options(max_upload_mb: float, video_frames: int, batch_size: int, upload_idle_timeout_s: float,
                  upload_timeout_s: float) -> None:
    """Refuses settings under which every request would fail (a ValueError: dfd.cli prints one line)."""
    positive = {
        "max_upload_mb": "a limit of 0 or less refuses every upload; e.g. --max_upload_mb=200",
        "upload_idle_timeout_s": "the seconds an upload may send nothing; e.g. --upload_idle_timeout_s=30",
        "upload_timeout_s": "the seconds a whole upload may take; e.g. --upload_timeout_s=600",
    }
    values = {"max_upload_mb": max_upload_mb, "upload_idle_timeout_s": upload_idle_timeout_s,
              "upload_timeout_s": upload_timeout_s}
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name}={value:g} must be a positive number: {positive[name]}")
    for name, value in (("video_frames", video_frames), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"--{name}={value} must be at least 1")


class Body:
    """A request's body as MultiPartParser reads it, stopped (UploadRefused) when too large or too slow."""

    def __init__(self, request: Request, limit: int, idle_s: float, total_s: float, too_large: str):
        self.request, self.limit, self.idle_s, self.total_s, self.too_large = request, limit, idle_s, total_s, too_large
        self.received = 0

    async def chunks(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_s
        stream = self.request.stream()
        while True:
            wait = min(self.idle_s, deadline - loop.time())
            try:
                chunk = await asyncio.wait_for(anext(stream), timeout=max(wait, 0.0))
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise UploadRefused(408, self._stalled(whole=wait < self.idle_s)) from None
            self.received += len(chunk)
            if self.received > self.limit + MULTIPART_OVERHEAD:
                raise UploadRefused(413, self.too_large)
            yield chunk

    def _stalled(self, whole: bool) -> str:
        if whole:
            return (f"the upload took longer than --upload_timeout_s={self.total_s:g} s and was dropped: send it "
                    "again over a faster link, or restart the server with a larger --upload_timeout_s")
        return (f"the upload sent nothing for {self.idle_s:g} s (--upload_idle_timeout_s) and was dropped: "
                "send it again")


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "a client"


class Service:
    """The request handlers, over one Batcher (the model's thread) and one private upload folder."""

    def __init__(self, loaded, options: dict, batch_size: int, window_s: float):
        self.options, self.limit = options, int(options["max_upload_mb"] * 1024 * 1024)
        self.batcher = Batcher(loaded, batch_size=batch_size, window_s=window_s,
                               video_frames=options["video_frames"], aggregate=options["aggregate"],
                               max_frame_pixels=options["max_frame_pixels"])
        self.stale_removed = uploads.remove_stale_folders()   # before our own folder: it is alive
        self.uploads = uploads.create_folder()
        self.description = model_description(loaded, options)
        self.too_large = (f"the upload is larger than --max_upload_mb={options['max_upload_mb']:g} MB; restart the "
                          "server with a larger --max_upload_mb to accept it")

    async def index(self, request: Request):
        return HTMLResponse(page.render(self.description))

    async def healthz(self, request: Request):
        return JSONResponse({"status": "ok"})

    async def model(self, request: Request):
        return JSONResponse(self.description)

    async def score(self, request: Request):
        try:
            form = await self._form(request)
        except UploadRefused as refused:
            # A stalled client's connection is closed, not kept for a next request. Others stay open (the
            # keep-alive timeout closes them): closing while a client still sends makes it miss the answer.
            headers = {"Connection": "close"} if refused.status == 408 else None
            return JSONResponse({"error": refused.error}, status_code=refused.status, headers=headers)
        try:
            return await self._score_form(request, form)
        finally:
            await form.close()

    async def _form(self, request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limit + MULTIPART_OVERHEAD:
            raise UploadRefused(413, self.too_large)
        if "multipart/form-data" not in request.headers.get("content-type", ""):
            raise UploadRefused(400, "send the file as multipart/form-data (e.g. curl -F file=@clip.mp4)")
        body = Body(request, self.limit, self.options["upload_idle_timeout_s"], self.options["upload_timeout_s"],
                    self.too_large)
        try:
            return await MultiPartParser(request.headers, body.chunks(), max_files=1, max_fields=10).parse()
        except MultiPartException as error:
            raise UploadRefused(400, f"malformed upload: {error.message}") from None
        except ClientDisconnect:   # the client's business, not a server error: one line, no traceback
            log.warning("dfd.serve: %s disconnected during its upload, after %d bytes; nothing was kept",
                        _client(request), body.received)
            raise UploadRefused(400, "the client disconnected") from None
        except UploadRefused as refused:
            if refused.status == 408:
                log.warning("dfd.serve: %s: %s", _client(request), refused.error)
            raise

    async def _score_form(self, request: Request, form):
        upload = next((value for _, value in form.multi_items() if hasattr(value, "filename")), None)
        if upload is None:
            return JSONResponse({"error": "no file in the request; send one as multipart/form-data"}, status_code=400)
        name = Path(upload.filename or "upload").name
        if upload.size is not None and upload.size > self.limit:
            return JSONResponse({"error": self.too_large}, status_code=413)
        path = self.uploads / f"{uuid.uuid4().hex}{_extension(name)}"
        with_crops = request.query_params.get("explain") in ("1", "true")
        try:
            with open(path, "wb") as handle:
                while chunk := await upload.read(COPY_CHUNK):
                    handle.write(chunk)
            result, crops, seconds = await asyncio.wrap_future(self.batcher.submit(str(path), with_crops))
        finally:
            path.unlink(missing_ok=True)
        entry = result.to_dict()
        entry["path"] = name
        entry.pop("explanation", None)
        if with_crops:
            entry["crops"] = crops or []
            entry["seconds"] = round(seconds, 3)
        if result.error is not None:
            return JSONResponse(entry, status_code=500 if result.error.startswith("scoring failed") else 422)
        return JSONResponse(entry)

    def shutdown(self) -> None:
        self.batcher.close()
        shutil.rmtree(self.uploads, ignore_errors=True)


def create_app(loaded, max_upload_mb: float = 200, video_frames: int = 16, aggregate: str = "mean",
               batch_size: int = 16, window_s: float = 0.02, host: str = "127.0.0.1", allowed_hosts=(),
               upload_idle_timeout_s: float = 30, upload_timeout_s: float = 600,
               max_frame_pixels: int = MAX_FRAME_PIXELS) -> Starlette:
    """The application; `host` is the address it will be bound to (the Host names it answers, guard)."""
    check_options(max_upload_mb, video_frames, batch_size, upload_idle_timeout_s, upload_timeout_s)
    options = {"max_upload_mb": max_upload_mb, "video_frames": video_frames, "aggregate": aggregate,
               "upload_idle_timeout_s": upload_idle_timeout_s, "upload_timeout_s": upload_timeout_s,
               "max_frame_pixels": max_frame_pixels}
    service = Service(loaded, options, batch_size, window_s)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            service.shutdown()

    routes = [Route("/", service.index), Route("/healthz", service.healthz), Route("/v1/model", service.model),
              Route("/v1/predict", service.score, methods=["POST"])]
    middleware = [Middleware(guard.Guard, bind_host=host, allowed_hosts=allowed_hosts,
                             csp=page.CONTENT_SECURITY_POLICY)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.batcher, app.state.uploads, app.state.shutdown = service.batcher, service.uploads, service.shutdown
    app.state.stale_removed = service.stale_removed
    return app


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Runs uvicorn in a background thread (tests, notebooks); returns (server, thread, base url)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.02)
    if not server.started:
        raise RuntimeError("the server did not start")
    return server, thread, f"http://{host}:{sock.getsockname()[1]}"


