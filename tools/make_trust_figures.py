"""Regenerates the README's trust pictures from the demo pipeline on the synthetic sample data.

    python tools/make_trust_figures.py [--work=/tmp/dfd-trust] [--docs=docs]

Runs what `make demo` runs, in --work (sample data, TFRecords, the demo CNN+LSTM from
configs/demo.flags), then `dfd.evaluate --calibrate --perturb=... --explain=1` and `dfd.serve` with a
headless chromium uploading a test clip, and writes small PNGs:
  docs/reliability.png   reliability diagram before and after temperature scaling (test split)
  docs/robustness.png    ROC AUC against perturbation level
  docs/explain.png       Grad-CAM on the crops of the most confidently detected fake test clip
  docs/serve.png         the dfd.serve page after scoring a fake test clip
The sample data is synthetic and easy: the pictures show the tools, not a detector's quality.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from absl import flags  # noqa: E402

from dfd import cli  # noqa: E402

FLAGS = flags.FLAGS
# What this tool writes into --work; anything else there is someone's, and --work is deleted when it holds no run.
WORK_NAMES = {"sample_data", "tfrecords", "run", "chromium", "serve_full.png"}


def define_flags() -> None:
    flags.DEFINE_string("work", "/tmp/dfd-trust", "Scratch folder (sample data, TFRecords, the run); "
                        "deleted and rebuilt when it holds no trained run.")
    flags.DEFINE_string("docs", str(ROOT / "docs"), "Where the PNGs go.")
    flags.DEFINE_integer("port", 8765, "Loopback port for the dfd.serve screenshot.")


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})


def shrink(source: Path, target: Path, width: int) -> None:
    import cv2

    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image.shape[1] > width:
        image = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])),
                           interpolation=cv2.INTER_AREA)
    from PIL import Image  # matplotlib's dependency: a 256-colour palette makes the PNG about 3x smaller

    Image.fromarray(image[..., ::-1]).quantize(256).save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")


def screenshot(run_dir: Path, clip: Path, target: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = subprocess.Popen([sys.executable, "-m", "dfd.serve", f"--model={run_dir}", f"--port={FLAGS.port}"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        url = f"http://127.0.0.1:{FLAGS.port}/"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         f"--user-data-dir={FLAGS.work}/chromium", "--window-size=900,1000"):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url)
            driver.find_element(By.ID, "file").send_keys(str(clip))
            WebDriverWait(driver, 300).until(lambda d: d.find_element(By.ID, "verdict").text in ("REAL", "FAKE"))
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(900, height + 400)   # room for the browser's own frame
            full = Path(FLAGS.work) / "serve_full.png"
            driver.save_screenshot(str(full))
        finally:
            driver.quit()
        shrink(full, target, 700)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv) -> None:
    del argv
    work, docs = Path(FLAGS.work), Path(FLAGS.docs)
    foreign = sorted(path.name for path in work.iterdir() if path.name not in WORK_NAMES) if work.is_dir() else []
    if foreign or work.resolve() in (ROOT, *ROOT.parents):
        raise ValueError(f"--work={work} holds files this tool did not write ({', '.join(foreign[:3]) or 'dfd'}), "
                         "and --work is deleted and rebuilt: give a new or empty scratch folder, e.g. /tmp/dfd-trust")
    sample, shards, run_dir = work / "sample_data", work / "tfrecords", work / "run"
    if not (run_dir / "checkpoints" / "best.keras").is_file():
        shutil.rmtree(work, ignore_errors=True)
        run("tools/make_sample_data.py", f"--output={sample}")
        run("tools/make_tfrecords.py", f"--source={sample}/videos", f"--output={shards}")
        run("-m", "dfd.train", "--flagfile=configs/demo.flags", f"--data={shards}", f"--run_dir={run_dir}",
            "--verbose=0")
    run("-m", "dfd.evaluate", f"--run_dir={run_dir}", "--threshold=val_eer", "--calibrate", "--explain=1",
        "--perturb=jpeg:90,70,50,30", "--perturb=scale:0.5,0.25", "--perturb=blur:1,2,3", "--perturb=noise:5,10,20")
    out = run_dir / "eval" / "test"
    docs.mkdir(parents=True, exist_ok=True)
    shrink(out / "reliability.png", docs / "reliability.png", 420)
    shrink(out / "robustness.png", docs / "robustness.png", 900)
    fakes = sorted((out / "explain").glob("correct_fake_*.png"))
    shrink(fakes[0], docs / "explain.png", 900)
    screenshot(run_dir, next(iter(sorted((sample / "videos" / "test" / "fake").glob("*.mp4")))), docs / "serve.png")


if __name__ == "__main__":
    define_flags()
    cli.run(main, "make_trust_figures", quiet=False)   # TensorFlow runs in its subprocesses only
