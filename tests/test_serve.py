"""dfd.serve: the JSON API's status codes, concurrent uploads scored in batches, and the page in a real browser.

The server runs for real (uvicorn on a free loopback port); requests go over HTTP with urllib, and the
page is driven by Debian's chromium + chromium-driver through selenium (make test installs them).
"""

import concurrent.futures
import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfd.evaluation import loading, predict
from dfd.serve.app import create_app, serve_in_thread
from dfd.testing import synthetic

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluate_predict_export import image_run  # noqa: E402,F401

MAX_UPLOAD_MB = 0.25
VIDEO_FRAMES = 5


def post(url: str, name: str, content: bytes, timeout: float = 120) -> tuple[int, dict]:
    """A multipart/form-data upload of one file; (status, JSON answer)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = synthetic.write_clip_and_photo(tmp_path_factory.mktemp("serve_media"), seed=1)
    (folder / "notes.txt").write_text("not a picture\n" * 10)
    return folder


@pytest.fixture(scope="module")
def server(image_run):  # noqa: F811
    loaded = loading.load(image_run.root)
    app = create_app(loaded, max_upload_mb=MAX_UPLOAD_MB, video_frames=VIDEO_FRAMES, window_s=0.05)
    server, thread, url = serve_in_thread(app)
    yield url, app, loaded
    server.should_exit = True
    thread.join(timeout=30)
    assert not app.state.uploads.exists()   # the private upload folder goes with the server


def expected_entries(loaded, files) -> dict:
    """What dfd.predict answers for each file, the reference the server must match."""
    paths = [str(files / name) for name in ("clip.mp4", "face.jpg", "notes.txt")]
    results = predict.predict_files(loaded, paths, video_frames=VIDEO_FRAMES, progress=None)
    return {Path(result.path).name: {**result.to_dict(), "path": Path(result.path).name} for result in results}


def test_api_status_codes_and_entries(server, files):
    url, app, loaded = server
    expected = expected_entries(loaded, files)
    assert get(f"{url}/healthz") == (200, {"status": "ok"})
    status, description = get(f"{url}/v1/model")
    assert status == 200 and description["kind"] == "image" and description["threshold"] == pytest.approx(0.25)
    assert description["input"]["shape"] == list(loaded.input_shape) and description["calibration"] is None
    for name in ("clip.mp4", "face.jpg"):
        status, entry = post(f"{url}/v1/predict", name, (files / name).read_bytes())
        assert status == 200
        assert entry.pop("fake_probability") == pytest.approx(expected[name]["fake_probability"], abs=1e-5)
        assert entry == {key: value for key, value in expected[name].items() if key != "fake_probability"}
    status, entry = post(f"{url}/v1/predict", "notes.txt", (files / "notes.txt").read_bytes())
    assert status == 422 and entry == expected["notes.txt"] and "not an image or video" in entry["error"]
    status, entry = post(f"{url}/v1/predict", "big.mp4", b"\x00" * int(MAX_UPLOAD_MB * 1024 * 1024 * 1.5))
    assert status == 413 and "--max_upload_mb" in entry["error"]
    status, entry = post(f"{url}/v1/predict?explain=1", "clip.mp4", (files / "clip.mp4").read_bytes())
    assert status == 200 and len(entry["crops"]) == entry["frames_used"] == VIDEO_FRAMES and entry["seconds"] > 0
    assert all(crop.startswith("data:image/png;base64,") for crop in entry["crops"])
    assert get(f"{url}/healthz")[0] == 200                 # still serving after the errors
    assert not any(app.state.uploads.iterdir())            # nothing uploaded is kept


def test_twenty_concurrent_uploads_are_answered_correctly_in_batches(server, files):
    url, app, loaded = server
    expected = expected_entries(loaded, files)
    names = ["clip.mp4", "face.jpg", "notes.txt", "face.jpg"] * 5
    batches_before = app.state.batcher.batches
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda name: post(f"{url}/v1/predict", name, (files / name).read_bytes()), names))
    for name, (status, entry) in zip(names, answers, strict=True):
        assert status == (422 if name == "notes.txt" else 200), (name, entry)
        assert entry.get("fake_probability") == pytest.approx(expected[name].get("fake_probability"), abs=1e-5)
        assert entry.get("error") == expected[name].get("error")
    assert app.state.batcher.batches - batches_before < len(names)   # several uploads shared a batch
    assert not any(app.state.uploads.iterdir())


def test_a_file_without_a_face_is_422_with_the_predict_error_entry(tmp_path):
    """A run whose preprocessing crops faces (MTCNN) refuses a faceless photo like dfd.predict does."""
    import keras
    from test_evaluate_predict_export import SIZE, SMALL_CNN, make_run

    from dfd import models
    from dfd.data.preprocessing import PreprocessSpec

    spec = PreprocessSpec(kind="image", num_frames=1, size=SIZE, encoding="jpeg", face_crop="mtcnn")
    keras.utils.set_random_seed(0)
    layout = make_run(tmp_path / "run", spec, models.build_model("image_cnn", (SIZE, SIZE, 3), **SMALL_CNN))
    loaded = loading.load(layout.root)
    photo = tmp_path / "wall.jpg"
    assert cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    expected = predict.predict_files(loaded, [str(photo)], progress=None)[0].to_dict()
    assert expected["error"].startswith("no face")
    app = create_app(loaded, window_s=0.0)
    server, thread, url = serve_in_thread(app)
    try:
        assert post(f"{url}/v1/predict", "wall.jpg", photo.read_bytes()) == (422, {**expected, "path": "wall.jpg"})
        assert get(f"{url}/healthz")[0] == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def chromium_driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}", "--window-size=1000,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})   # the console: CSP violations show there
    # The driver's path is given, so selenium never runs its driver manager (which would download).
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_page_in_a_real_browser_shows_the_verdict_for_an_uploaded_video(server, files, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, loaded = server
    expected = expected_entries(loaded, files)["clip.mp4"]
    driver = chromium_driver(tmp_path / "profile")
    try:
        driver.set_page_load_timeout(60)
        driver.get(url + "/")
        assert "is this face real" in driver.title
        driver.find_element(By.ID, "file").send_keys(str(files / "clip.mp4"))
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "verdict").text in ("REAL", "FAKE"))
        assert driver.find_element(By.ID, "verdict").text == expected["label"].upper()
        shown = float(driver.find_element(By.ID, "probability").text.split()[0])
        assert shown == pytest.approx(expected["fake_probability"], abs=1e-4)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#crops img")) == VIDEO_FRAMES
        assert len(driver.find_elements(By.CSS_SELECTOR, "#chart rect")) == VIDEO_FRAMES
        assert driver.find_element(By.ID, "seconds").text.endswith(" s")
        # A file that is not media: the page shows the server's error, and the server keeps serving.
        driver.find_element(By.ID, "file").send_keys(str(files / "notes.txt"))
        WebDriverWait(driver, 60).until(lambda d: "422" in d.find_element(By.ID, "status").text)
        assert "not an image or video" in driver.find_element(By.ID, "status").text
        # All of it ran under the page's Content-Security-Policy: its own style and script, nothing refused...
        assert driver.execute_script("return getComputedStyle(document.getElementById('drop')).borderTopStyle") \
            == "dashed"
        assert not [entry for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]
        # ...and a script put into the page by anything else does not run.
        assert driver.execute_script("const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
                                     " document.body.appendChild(s); return window.ran === undefined")
    finally:
        driver.quit()
