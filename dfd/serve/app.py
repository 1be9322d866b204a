"""The Starlette application: the page, POST /v1/predict, GET /v1/model, GET /healthz.

POST /v1/predict takes one multipart file (any field name) and answers the entry dfd.predict
--format=json gives for it (200), with "path" the uploaded file's name. ?explain=1 adds "crops" (PNG
data URIs: each face crop with its Grad-CAM heatmap) and "seconds" (for the page). Errors:
  413  the upload is larger than --max_upload_mb (refused while it streams in, nothing kept)
  422  the file is not an image or video, cannot be decoded, or has no face: the dfd.predict error entry
  400  no file in the request
Uploads are written to a private temporary folder only while they are scored (OpenCV reads videos
from files) and deleted before the answer is sent; the folder is removed when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from dfd.preprocess.video_reader import MAX_FRAME_PIXELS
from dfd.serve import page
from dfd.serve.batcher import Batcher

COPY_CHUNK = 1 << 20


class UploadTooLarge(Exception):
    pass


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


def create_app(loaded, max_upload_mb: float = 200, video_frames: int = 16, aggregate: str = "mean",
               batch_size: int = 16, window_s: float = 0.02, max_frame_pixels: int = MAX_FRAME_PIXELS) -> Starlette:
    options = {"max_upload_mb": max_upload_mb, "video_frames": video_frames, "aggregate": aggregate}
    limit = int(max_upload_mb * 1024 * 1024)
    batcher = Batcher(loaded, batch_size=batch_size, window_s=window_s, video_frames=video_frames,
                      aggregate=aggregate, max_frame_pixels=max_frame_pixels)
    uploads = Path(tempfile.mkdtemp(prefix="dfd-serve-"))   # mode 0700: only this user reads uploads
    description = model_description(loaded, options)
    too_large = (f"the upload is larger than --max_upload_mb={max_upload_mb:g} MB; restart the server with a larger "
                 "--max_upload_mb to accept it")

    async def index(request: Request):
        return HTMLResponse(page.render(description))

    async def healthz(request: Request):
        return JSONResponse({"status": "ok"})

    async def model(request: Request):
        return JSONResponse(description)

    async def score(request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:   # room for multipart headers
            return JSONResponse({"error": too_large}, status_code=413)

        async def limited():
            received = 0
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit + 64 * 1024:
                    raise UploadTooLarge
                yield chunk

        if "multipart/form-data" not in request.headers.get("content-type", ""):
            return JSONResponse({"error": "send the file as multipart/form-data (e.g. curl -F file=@clip.mp4)"},
                                status_code=400)
        try:
            form = await MultiPartParser(request.headers, limited(), max_files=1, max_fields=10).parse()
        except UploadTooLarge:
            return JSONResponse({"error": too_large}, status_code=413)
        except MultiPartException as error:
            return JSONResponse({"error": f"malformed upload: {error.message}"}, status_code=400)
        try:
            upload = next((value for _, value in form.multi_items() if hasattr(value, "filename")), None)
            if upload is None:
                return JSONResponse({"error": "no file in the request; send one as multipart/form-data"},
                                    status_code=400)
            name = Path(upload.filename or "upload").name
            if upload.size is not None and upload.size > limit:
                return JSONResponse({"error": too_large}, status_code=413)
            path = uploads / f"{uuid.uuid4().hex}{_extension(name)}"
            try:
                with open(path, "wb") as handle:
                    while chunk := await upload.read(COPY_CHUNK):
                        handle.write(chunk)
                with_crops = request.query_params.get("explain") in ("1", "true")
                result, crops, seconds = await asyncio.wrap_future(batcher.submit(str(path), with_crops))
            finally:
                path.unlink(missing_ok=True)
        finally:
            await form.close()
        entry = result.to_dict()
        entry["path"] = name
        entry.pop("explanation", None)
        if with_crops:
            entry["crops"] = crops or []
            entry["seconds"] = round(seconds, 3)
        if result.error is not None:
            return JSONResponse(entry, status_code=500 if result.error.startswith("scoring failed") else 422)
        return JSONResponse(entry)

    def shutdown():
        batcher.close()
        shutil.rmtree(uploads, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            shutdown()

    app = Starlette(routes=[Route("/", index), Route("/healthz", healthz), Route("/v1/model", model),
                            Route("/v1/predict", score, methods=["POST"])], lifespan=lifespan)
    app.state.batcher, app.state.uploads, app.state.shutdown = batcher, uploads, shutdown
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


