"""dfd.serve against hostile input: HTML in a model's files, other sites' pages, stalled and vanishing
uploads, bad flags, folders left by killed servers.

The server runs for real (uvicorn on a free 127.0.0.1 port, dfd.serve.app.serve_in_thread); the Host,
stall and disconnect cases speak HTTP over raw sockets, so the test sends exactly the bytes it means.
Every wait is bounded.
"""

import html
import json
import logging
import math
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import keras
import pytest

from dfd import models
from dfd.data.preprocessing import PreprocessSpec
from dfd.evaluation import loading
from dfd.serve import guard, page, uploads
from dfd.serve.__main__ import listening_socket, start_up_lines
from dfd.serve.app import check_options, create_app, serve_in_thread
from dfd.testing import synthetic

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_predict_export import SIZE, SMALL_CNN, image_run, make_run  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
IDLE_S = 1.0   # the test server's --upload_idle_timeout_s


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> bytes:
    folder = synthetic.write_clip_and_photo(tmp_path_factory.mktemp("hostile_serve_media"), seed=2)
    return (folder / "face.jpg").read_bytes()


@pytest.fixture(scope="module")
def server(image_run):  # noqa: F811
    app = create_app(loading.load(image_run.root), max_upload_mb=0.25, window_s=0.0,
                     upload_idle_timeout_s=IDLE_S)
    server, thread, url = serve_in_thread(app)
    yield int(url.rsplit(":", 1)[1]), app
    server.should_exit = True
    thread.join(timeout=30)


def multipart(content: bytes, name: str = "face.jpg") -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def request_bytes(method: str, path: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{key}: {value}" for key, value in headers.items()),
             "Connection: close"] + ([f"Content-Length: {len(body)}"] if method == "POST" else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket, timeout: float = 60) -> tuple[int, dict, bytes]:
    """(status, headers in lower case, body) of the answer, read until the server closes the connection."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {key.lower(): value for key, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def exchange(port: int, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request_bytes(method, path, headers, body))
        return read_answer(sock, timeout=300)   # a bound, not a wait: scoring on a loaded 2-core machine is slow


def upload(port: int, content: bytes, headers: dict) -> tuple[int, dict]:
    content_type, body = multipart(content)
    status, _, answer = exchange(port, "POST", "/v1/predict", {"Content-Type": content_type, **headers}, body)
    return status, json.loads(answer)


# --- the page: HTML from the model's files, security headers ---------------------------------------------------

HOSTILE_NAME = "a__MODEL__<b onmouseover=alert(1)>"
HOSTILE_METHOD = "</script><img src=x onerror=alert(document.domain)><!--"


def page_parts(text: str) -> tuple[dict, str]:
    """The page's model JSON, and the page without it and without its own script (the parts values go in)."""
    found = re.findall(r'<script id="model" type="application/json">(.*?)</script>', text, flags=re.S)
    assert len(found) == 1 and text.count(page._SCRIPT) == 1
    return json.loads(found[0]), text.replace(found[0], "").replace(page._SCRIPT, "")


def test_html_in_the_model_name_and_threshold_file_stays_text(tmp_path):
    spec = PreprocessSpec(kind="image", num_frames=1, size=SIZE, encoding="jpeg")
    keras.utils.set_random_seed(0)
    inner = models.build_model("image_cnn", (SIZE, SIZE, 3), **SMALL_CNN)
    layout = make_run(tmp_path / "run", spec, keras.Model(inner.inputs, inner.outputs, name=HOSTILE_NAME))
    loading.write_threshold(layout.root, 0.4, HOSTILE_METHOD, "val", 1.0)
    app = create_app(loading.load(layout.root), window_s=0.0)
    server, thread, url = serve_in_thread(app)
    try:
        port = int(url.rsplit(":", 1)[1])
        status, headers, body = exchange(port, "GET", "/", {"Host": f"127.0.0.1:{port}"})
        _, _, described = exchange(port, "GET", "/v1/model", {"Host": f"127.0.0.1:{port}"})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    description, rest = page_parts(text)
    assert description == json.loads(described) and description["name"] == HOSTILE_NAME
    assert HOSTILE_METHOD in description["threshold_source"]
    assert "<img" not in text.replace(page._SCRIPT, "") and "<!--" not in text
    assert "<b onmouseover" not in rest and rest.count(f"<b>{html.escape(HOSTILE_NAME)}</b>") == 1   # text, once
    assert text.count("<script") == 2 and text.count("</script>") == 2   # the data and the page's own script


def test_render_fills_each_placeholder_once_and_escapes_for_its_place():
    description = {"name": "__MODEL__ & __KIND__<script>", "kind": "image<i>", "threshold": 0.5,
                   "calibration": {"temperature": 2.0}, "threshold_source": HOSTILE_METHOD, "max_upload_mb": 1}
    text = page.render(description)
    parsed, rest = page_parts(text)
    assert parsed == description and "<img" not in rest and "<!--" not in text
    assert "<b>__MODEL__ &amp; __KIND__&lt;script&gt;</b> (image&lt;i&gt; model), threshold 0.5000" in rest
    assert re.search(r"__[A-Z]+__", rest.replace(html.escape(description["name"]), "")) is None
    # The policy names the page's own script and style by hash, and those are exactly what the page holds.
    script, style = re.findall(r"<script>(.*?)</script>", text, re.S), re.findall(r"<style>(.*?)</style>", text, re.S)
    assert len(script) == len(style) == 1
    assert page._sha256(script[0]) in page.CONTENT_SECURITY_POLICY
    assert page._sha256(style[0]) in page.CONTENT_SECURITY_POLICY
    policy = page.CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy


def test_every_answer_carries_the_security_headers(server):
    port, _ = server
    for path, host in (("/", "127.0.0.1"), ("/v1/model", "localhost"), ("/healthz", "evil.example")):
        _, headers, _ = exchange(port, "GET", path, {"Host": f"{host}:{port}"})
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == page.CONTENT_SECURITY_POLICY


# --- other sites' pages: DNS rebinding (Host) and cross-site uploads (Origin) ---------------------------------

def test_an_unknown_host_name_is_refused_with_421(server, photo):
    port, app = server
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert exchange(port, "GET", "/healthz", {"Host": host})[0] == 200, host
    batches = app.state.batcher.batches
    for host in (f"evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io", "", "user@127.0.0.1"):
        status, headers, body = exchange(port, "GET", "/", {"Host": host})
        assert status == 421 and "not known by the name in the Host header" in json.loads(body)["error"], host
        assert headers["content-type"] == "application/json"
    status, answer = upload(port, photo, {"Host": f"evil.example:{port}"})
    assert status == 421 and "--allowed_hosts" in answer["error"]
    assert app.state.batcher.batches == batches and not any(app.state.uploads.iterdir())   # nothing was scored


def test_known_hosts_of_a_wildcard_bind_and_allowed_names():
    wildcard = guard.known_hosts("0.0.0.0", ["dfd.lab.example"])
    for host in ("10.1.2.3:8000", "[fe80::1]", "localhost", "dfd.lab.example:8000", socket.gethostname()):
        assert guard.host_refusal(host, wildcard, wildcard=True) is None, host
    assert guard.host_refusal("evil.example", wildcard, wildcard=True) is not None
    specific = guard.known_hosts("192.168.7.7")
    assert guard.host_refusal("192.168.7.7:80", specific, wildcard=False) is None
    assert guard.host_refusal("10.1.2.3", specific, wildcard=False) is not None         # an address it is not bound to
    assert guard.host_refusal("localhost", specific, wildcard=False) is not None        # not a loopback bind


def test_a_cross_origin_upload_is_refused_with_403_and_not_scored(server, photo):
    port, app = server
    own = f"127.0.0.1:{port}"
    batches = app.state.batcher.batches
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": f"http://localhost:{port}"},
                    {"Origin": f"https://evil.example:{port}"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://{own}", "Sec-Fetch-Site": "same-site"}):
        status, answer = upload(port, photo, {"Host": own, **headers})
        assert status == 403 and "only from this server's own page" in answer["error"], headers
    assert app.state.batcher.batches == batches and not any(app.state.uploads.iterdir())
    # The page's own uploads (same origin), and clients that are not browsers, are scored.
    for headers in ({"Origin": f"http://{own}", "Sec-Fetch-Site": "same-origin"}, {},
                    {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"}):
        status, answer = upload(port, photo, {"Host": own, **headers})
        assert status == 200 and answer["label"] in ("real", "fake"), headers


# --- uploads that stall, trickle or vanish -------------------------------------------------------------------

def stalled_upload(port: int, photo: bytes) -> socket.socket:
    """A connection that sent the headers and half of its upload, then nothing."""
    content_type, body = multipart(photo)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(request_bytes("POST", "/v1/predict", {"Host": f"127.0.0.1:{port}", "Content-Type": content_type},
                               body)[:-(len(body) // 2)])
    return sock


def test_stalled_uploads_are_dropped_with_408_after_the_idle_timeout(server, photo):
    port, app = server
    started = time.monotonic()
    sockets = [stalled_upload(port, photo) for _ in range(20)]
    try:
        answers = [read_answer(sock, timeout=20) for sock in sockets]   # the server closes each one
    finally:
        for sock in sockets:
            sock.close()
    elapsed = time.monotonic() - started
    assert IDLE_S <= elapsed < IDLE_S + 60   # a bound: without the timeout each read above times out (20 s)
    for status, headers, body in answers:
        assert status == 408 and headers["connection"] == "close"
        assert "--upload_idle_timeout_s" in json.loads(body)["error"]
    assert exchange(port, "GET", "/healthz", {"Host": f"127.0.0.1:{port}"})[0] == 200
    assert not any(app.state.uploads.iterdir())


def test_a_trickling_upload_is_dropped_after_the_whole_body_timeout(image_run, photo):  # noqa: F811
    # An idle timeout far above the trickle's pauses: a starved test process cannot turn this into a stall.
    app = create_app(loading.load(image_run.root), window_s=0.0, upload_idle_timeout_s=30, upload_timeout_s=2)
    server, thread, url = serve_in_thread(app)
    sock = stalled_upload(int(url.rsplit(":", 1)[1]), photo)
    started = time.monotonic()
    try:
        while not select.select([sock], [], [], 0.2)[0]:   # one byte every 0.2 s
            assert time.monotonic() - started < 60
            sock.send(b"x")
        status, _, body = read_answer(sock, timeout=20)
    finally:
        sock.close()
        server.should_exit = True
        thread.join(timeout=30)
    assert status == 408 and "--upload_timeout_s=2 s" in json.loads(body)["error"]
    assert time.monotonic() - started >= 2 - 0.5


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_a_client_that_disconnects_mid_upload_is_one_log_line(server, photo):
    port, app = server
    records = Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(records)
    try:
        sock = stalled_upload(port, photo)
        sock.close()
        deadline = time.monotonic() + 20
        while not records.records and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)   # room for a traceback that would follow
    finally:
        logger.removeHandler(records)
    assert len(records.records) == 1, [record.getMessage() for record in records.records]
    record = records.records[0]
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert "\n" not in message and re.fullmatch(r"dfd\.serve: 127\.0\.0\.1:\d+ disconnected during its upload, "
                                                r"after \d+ bytes; nothing was kept", message)
    assert exchange(port, "GET", "/healthz", {"Host": f"127.0.0.1:{port}"})[0] == 200
    assert not any(app.state.uploads.iterdir())


# --- flags ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ((-5, 16, 16, 30, 600), "--max_upload_mb=-5 must be a positive number"),
    ((0, 16, 16, 30, 600), "--max_upload_mb=0 must be a positive number"),
    ((math.nan, 16, 16, 30, 600), "--max_upload_mb=nan"),
    ((200, 0, 16, 30, 600), "--video_frames=0 must be at least 1"),
    ((200, 16, 0, 30, 600), "--batch_size=0 must be at least 1"),
    ((200, 16, 16, 0, 600), "--upload_idle_timeout_s=0 must be a positive number"),
    ((200, 16, 16, 30, math.inf), "--upload_timeout_s=inf must be a positive number"),
])
def test_options_that_would_refuse_every_request_are_refused(values, message):
    """python -m dfd.serve checks them before the model loads: one line (tests/test_cli.py, --max_upload_mb=-5)."""
    with pytest.raises(ValueError, match=re.escape(message)):
        check_options(*values)


def test_host_and_port_are_checked_by_binding(image_run):  # noqa: F811
    with pytest.raises(ValueError, match="--port=70000 must be between 1 and 65535"):
        listening_socket("127.0.0.1", 70000)
    with pytest.raises(ValueError, match="cannot listen on --host=192.0.2.1"):   # TEST-NET: not this machine's
        listening_socket("192.0.2.1", 8000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on --host=127.0.0.1 --port={port}: .*choose another"):
            listening_socket("127.0.0.1", port)
    loaded = loading.load(image_run.root)
    wide = start_up_lines(loaded, "0.0.0.0", 8000, [])
    assert any("other machines on the network can reach this server" in line for line in wide)
    assert wide[-1].startswith("Open http://127.0.0.1:8000/")
    local = start_up_lines(loaded, "127.0.0.1", 8000, [Path("/tmp/dfd-serve-1-x")])
    assert not any("other machines" in line for line in local) and "removed 1 upload folder" in local[1]


# --- upload folders left by killed servers -------------------------------------------------------------------

def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_upload_folder_of_a_killed_server_is_removed_at_the_next_start(image_run, tmp_path, monkeypatch):  # noqa: F811
    code = ("from dfd.serve import uploads; folder = uploads.create_folder(); (folder / 'clip.mp4').write_bytes(b'x');"
            " print(folder, flush=True); import time; time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT),
                                                                 "TMPDIR": str(tmp_path)},
                             stdout=subprocess.PIPE, text=True)
    try:
        left = Path(child.stdout.readline().strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert left.parent == tmp_path and (left / "clip.mp4").is_file()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app = create_app(loading.load(image_run.root), window_s=0.0)
    try:
        assert app.state.stale_removed == [left] and not left.exists()
        assert app.state.uploads.parent == tmp_path and app.state.uploads.name.startswith(
            f"dfd-serve-{os.getpid()}-{uploads.pid_namespace()}-")
    finally:
        app.state.shutdown()
    assert not app.state.uploads.exists()


def test_only_dfds_own_folders_of_dead_servers_are_removed(tmp_path):
    dead, alive, namespace = dead_pid(), os.getpid(), uploads.pid_namespace()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the server's")
    stale = tmp_path / f"dfd-serve-{dead}-{namespace}-abc_123"
    stale.mkdir()
    (stale / "upload.mp4").write_bytes(b"x")
    (stale / "link").symlink_to(outside, target_is_directory=True)    # removed as a link, never followed
    live = tmp_path / f"dfd-serve-{alive}-{namespace}-abc"
    live.mkdir()
    elsewhere = tmp_path / f"dfd-serve-{dead}-{namespace}7-abc"     # another pid namespace's (a container's)
    elsewhere.mkdir()
    foreign = tmp_path / f"dfd-serve-other-{dead}"                  # not dfd's name
    foreign.mkdir()
    not_a_folder = tmp_path / f"dfd-serve-{dead}-{namespace}-file"
    not_a_folder.write_text("a file")
    linked = tmp_path / f"dfd-serve-{dead}-{namespace}-link"
    linked.symlink_to(outside, target_is_directory=True)
    # Another user's folder: the same folders seen as if this process ran under another uid.
    assert uploads.remove_stale_folders(tmp_path, uid=os.getuid() + 1) == []
    assert stale.exists()
    assert uploads.remove_stale_folders(tmp_path) == [stale]
    assert not stale.exists() and (outside / "keep.txt").read_text() == "not the server's"
    assert live.is_dir() and elsewhere.is_dir() and foreign.is_dir() and not_a_folder.is_file() and linked.is_symlink()


def test_the_folder_of_a_killed_server_that_stays_a_zombie_is_removed(tmp_path):
    """A container whose first process reaps nothing keeps a killed server as a zombie for good."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        child.send_signal(signal.SIGKILL)
        stat_file, deadline = Path(f"/proc/{child.pid}/stat"), time.monotonic() + 20
        while stat_file.read_text().rsplit(")", 1)[1].split()[0] != "Z":   # not reaped: os.kill(pid, 0) succeeds
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stale = tmp_path / f"dfd-serve-{child.pid}-{uploads.pid_namespace()}-zombie"
        stale.mkdir()
        assert uploads.remove_stale_folders(tmp_path) == [stale] and not stale.exists()
    finally:
        child.wait(timeout=30)
