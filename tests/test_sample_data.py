"""The synthetic sample dataset: layout, determinism, decodable files, the swap, no identity leak."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfd.sample_data import clips, plan_dataset, split_counts, swap, write_sample_dataset
from dfd.sample_data.faces import FaceGrid, Pose, draw_head, random_identity
from dfd.testing.video_files import read_all_frames

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(videos_per_class={"train": 2, "val": 1, "test": 1},
             images_per_class={"train": 2, "val": 1, "test": 1},
             frames_per_video=6, video_size=(64, 48))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_video(path: Path) -> list[np.ndarray]:
    return read_all_frames(path, rgb=False)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    summary = write_sample_dataset(root, seed=3, **SMALL)
    return root, summary


def test_layout_counts_and_balance(small_dataset):
    root, summary = small_dataset
    expected = {"train": 2, "val": 1, "test": 1}
    for kind, extension in (("videos", ".mp4"), ("images", ".jpg")):
        for split, count in expected.items():
            for label in ("real", "fake"):
                files = sorted((root / kind / split / label).iterdir())
                assert len(files) == count, (kind, split, label)
                assert all(f.suffix == extension for f in files)
                assert summary.counts[kind][split][label] == count
    # Nothing half-written is left behind.
    assert not [p for p in root.rglob(".partial-*")]
    assert "synthetic" in summary.format().lower()


def test_files_decode_with_expected_frames_and_size(small_dataset):
    root, _ = small_dataset
    for path in (root / "videos").rglob("*.mp4"):
        frames = _read_video(path)
        assert len(frames) == 6, path
        assert frames[0].shape == (48, 64, 3)
    for path in (root / "images").rglob("*.jpg"):
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (256, 256, 3), path


def test_same_seed_gives_identical_files_and_another_seed_does_not(small_dataset, tmp_path):
    root, _ = small_dataset
    again = tmp_path / "again"
    write_sample_dataset(again, seed=3, workers=2, **SMALL)  # parallel drawing changes nothing
    assert _files(again) == _files(root)
    other = tmp_path / "other"
    write_sample_dataset(other, seed=4, **SMALL)
    first, second = _files(root), _files(other)
    assert first.keys() == second.keys()
    media = [name for name in first if not name.endswith(".csv")]
    assert all(first[name] != second[name] for name in media)


def test_identities_never_cross_splits_and_say_nothing_about_the_label(small_dataset):
    items = plan_dataset(split_counts(40, 0.2, 0.2), split_counts(10, 0.2, 0.2))
    by_split: dict = {}
    for item in items:
        ids = by_split.setdefault((item.kind, item.split), {"real": set(), "fake": set(), "all": set()})
        ids[item.label].add(item.target_id)
        ids["all"].add(item.target_id)
        if item.source_id is not None:
            assert item.source_id != item.target_id
            ids["all"].add(item.source_id)
    pools = list(by_split.values())
    for i, first in enumerate(pools):
        # Within a split the same people are targets of reals and of fakes.
        assert first["real"] == first["fake"]
        for second in pools[i + 1:]:
            assert not first["all"] & second["all"]
    # The CSVs written beside the files carry the same promise.
    root, _ = small_dataset
    with open(root / "videos.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and all((root / row["path"]).is_file() for row in rows)
    groups = {}
    for row in rows:
        groups.setdefault(row["split"], set()).update({row["group"], row["swap_source"]} - {""})
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


def test_fake_differs_from_real_inside_the_face_only():
    target = random_identity(np.random.default_rng(1), 1)
    source = random_identity(np.random.default_rng(2), 2)
    size = 96
    real = clips.render_clip(np.random.default_rng(7), target, 2, size, size)
    fake = clips.render_clip(np.random.default_rng(7), target, 2, size, size, source)
    # Replay the clip's first draws to learn where the head was in frame 0.
    rng = np.random.default_rng(7)
    clips.background(rng, size, size)
    pose = clips.head_track(rng, 2, size, size)[0]
    grid = FaceGrid(size, size, pose)
    radius = np.sqrt(grid.u ** 2 + grid.v ** 2)
    difference = np.abs(fake[0].astype(np.int16) - real[0].astype(np.int16)).max(axis=-1)
    inner = (np.abs(grid.u) < 0.25) & (grid.v > -0.2) & (grid.v < 0.5)
    assert difference[inner].mean() > 8
    # Same background, body, motion and noise: outside the head nothing changed.
    assert difference[radius > 1.4].max() == 0
    later = np.abs(fake[1].astype(np.int16) - real[1].astype(np.int16)).max(axis=-1)
    assert later[radius > 1.6].max() == 0


def test_swap_keeps_the_target_outside_the_mask_and_blurs_inside():
    pose = Pose(center_x=64, center_y=60, scale=40)
    target = random_identity(np.random.default_rng(5), 5)
    source = random_identity(np.random.default_rng(6), 6)
    target_frame = np.full((128, 128, 3), 0.5, np.float32)
    grid = draw_head(target_frame, target, pose)
    source_frame = np.full((128, 128, 3), 0.5, np.float32)
    draw_head(source_frame, source, pose)
    style = swap.random_swap_style(np.random.default_rng(0))
    masks = [swap.swap_mask(grid, target, style, np.random.default_rng(i)) for i in range(2)]
    noise = np.random.default_rng(0).normal(0, 0.02, target_frame.shape).astype(np.float32)
    noisy = target_frame + noise
    fake = swap.swap_face(noisy, source_frame, masks[0], style, noise)
    outside = masks[0] == 0
    assert np.array_equal(fake[outside], noisy[outside])
    inside = masks[0] == 1
    assert inside.sum() > 500
    # Resolution loss and dropped sensor noise: the pasted face is smoother than the camera's.
    def roughness(image):
        return np.abs(cv2.Laplacian(image.mean(axis=-1), cv2.CV_32F))[inside].mean()
    assert roughness(fake) < 0.7 * roughness(noisy)
    # The mask is fitted per frame, so its boundary moves.
    assert np.abs(masks[0] - masks[1]).max() > 0.3


def test_split_counts_and_bad_arguments(tmp_path):
    assert split_counts(40, 0.2, 0.2) == {"train": 24, "val": 8, "test": 8}
    assert split_counts(3, 0.1, 0.1) == {"train": 1, "val": 1, "test": 1}
    with pytest.raises(ValueError, match="sum to less than 1"):
        split_counts(10, 0.6, 0.5)
    with pytest.raises(ValueError, match="unknown split"):
        split_counts({"training": 3}, 0.2, 0.2)
    foreign = tmp_path / "foreign"
    (foreign / "videos").mkdir(parents=True)
    with pytest.raises(ValueError, match="not written by make_sample_data"):
        write_sample_dataset(foreign, videos_per_class=1, images_per_class=0)


def test_rerun_replaces_an_earlier_sample_dataset(tmp_path):
    write_sample_dataset(tmp_path, seed=0, **SMALL)
    write_sample_dataset(tmp_path, seed=0, videos_per_class={"train": 1}, images_per_class=0,
                         frames_per_video=2, video_size=(32, 32))
    assert len(list(tmp_path.rglob("*.mp4"))) == 2
    assert not (tmp_path / "images").exists()


def test_command_line_help_and_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tool = str(REPO / "tools" / "make_sample_data.py")
    # absl exits with status 1 after --help; what matters is what it says.
    shown = subprocess.run([sys.executable, tool, "--help"], capture_output=True, text=True, env=env)
    assert "synthetic" in shown.stdout.lower() and "--videos_per_class" in shown.stdout
    done = subprocess.run([sys.executable, tool, f"--output={tmp_path}", "--videos_per_class=3",
                           "--images_per_class=3", "--frames_per_video=4", "--video_size=48"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "train 1 real + 1 fake" in done.stdout and "12 files" in done.stdout
    assert len(list(tmp_path.rglob("*.mp4"))) == len(list(tmp_path.rglob("*.jpg"))) == 6
