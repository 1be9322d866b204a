"""Discovery of every input layout and group-disjoint splitting (no media decoding)."""

import json
from pathlib import Path

import pytest

from dfd.convert import sources, splits


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_layout_case_insensitive_split_and_class_names(tmp_path):
    for name in ["TRAIN/Real/a.mp4", "Train/FAKE/b.mp4", "valid/real/c.mp4", "Validation/fake/d.mp4",
                 "Test/REAL/e.mp4", "test/Fake/.hidden.mp4", "README.txt"]:
        touch(tmp_path / name)
    source_type, items = sources.discover(str(tmp_path))
    assert source_type == "folder"
    found = {item.source: (item.split, item.label) for item in items}
    assert found == {"TRAIN/Real/a.mp4": ("train", 0), "Train/FAKE/b.mp4": ("train", 1),
                     "valid/real/c.mp4": ("val", 0), "Validation/fake/d.mp4": ("val", 1),
                     "Test/REAL/e.mp4": ("test", 0)}
    assert sources.detect_kind(items) == "video"


def test_folder_without_splits_gets_group_splits(tmp_path):
    for i in range(20):
        touch(tmp_path / ("real" if i % 2 else "fake") / f"{i}.jpg")
    _, items = sources.discover(str(tmp_path))
    assert {item.split for item in items} == {None}
    assigned = splits.assign_splits(items, 0.2, 0.2, seed=1)
    counts = {s: sum(item.split == s for item in assigned) for s in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 4, "test": 4}
    assert sources.detect_kind(items) == "image"


def test_empty_folder_says_what_layout_is_expected(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match="<split>/<class>/<files>"):
        sources.discover(str(tmp_path))


def test_manifest_relative_paths_labels_and_empty_splits(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,label,split,group\n"
        "clips/a.mp4,REAL,train,alice\n"
        "clips/b.mp4,1,Validation,bob\n"
        f"{tmp_path}/abs.mp4,fake,,carol\n")
    source_type, items = sources.discover(None, manifest=str(tmp_path / "m.csv"))
    assert source_type == "manifest"
    assert [(i.label, i.split, i.group) for i in items] == [(0, "train", "alice"), (1, "val", "bob"),
                                                              (1, None, "carol")]
    assert items[0].path == str(tmp_path / "clips" / "a.mp4")


@pytest.mark.parametrize("body, message", [
    ("path,label\nx.mp4,real\n", "lacks columns"),
    ("path,label,split\nx.mp4,maybe,train\n", "neither real nor fake"),
    ("path,label,split\nx.mp4,real,holdout\n", "not one of train/val/test"),
])
def test_bad_manifest_is_a_clear_error(tmp_path, body, message):
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(ValueError, match=message):
        sources.discover(None, manifest=str(tmp_path / "m.csv"))


def test_dfdc_groups_fakes_with_their_original(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    entries = {"orig1.mp4": {"label": "REAL", "split": "train"},
               "orig2.mp4": {"label": "REAL", "split": "train"}}
    for i in range(6):
        entries[f"fake{i}.mp4"] = {"label": "FAKE", "split": "train", "original": f"orig{1 + i % 2}.mp4"}
    part.mkdir()
    (part / "metadata.json").write_text(json.dumps(entries))
    source_type, items = sources.discover(str(tmp_path))
    assert source_type == "dfdc"
    by_name = {Path(i.path).name: i for i in items}
    assert by_name["fake0.mp4"].group == by_name["orig1.mp4"].group == "orig1"
    assert by_name["fake1.mp4"].label == 1 and by_name["orig2.mp4"].label == 0
    assigned = splits.assign_splits(items, 0.3, 0.3, seed=0)
    split_of_group = {}
    for item in assigned:
        assert split_of_group.setdefault(item.group, item.split) == item.split


def make_ffpp(root: Path, levels=("c23",)) -> None:
    for level in levels:
        for video_id in ("000", "003", "010", "012", "020", "021"):
            touch(root / "original_sequences/youtube" / level / "videos" / f"{video_id}.mp4")
        for method in ("Deepfakes", "FaceSwap"):
            for pair in ("000_003", "003_000", "010_012", "012_010", "020_021", "021_020"):
                touch(root / "manipulated_sequences" / method / level / "videos" / f"{pair}.mp4")
    for method in ("Deepfakes", "FaceSwap"):
        touch(root / "manipulated_sequences" / method / "masks/videos/000_003.mp4")


def test_ffpp_without_split_files_keeps_swapped_identities_together(tmp_path):
    make_ffpp(tmp_path)
    source_type, items = sources.discover(str(tmp_path))
    assert source_type == "ffpp"
    assert len(items) == 6 + 12  # masks left out
    assert sum(item.label for item in items) == 12
    groups = {Path(i.path).stem: i.group for i in items if i.label == 0}
    assert groups["000"] == groups["003"] != groups["010"]
    assigned = splits.assign_splits(items, 0.34, 0.33, seed=3)
    assert {item.split for item in assigned} == {"train", "val", "test"}
    ids_by_split = {}
    for item in assigned:
        for video_id in Path(item.path).stem.split("_"):
            assert ids_by_split.setdefault(video_id, item.split) == item.split


def test_ffpp_with_official_split_files(tmp_path):
    make_ffpp(tmp_path)
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    for name, pairs in {"train": [["000", "003"]], "val": [["010", "012"]], "test": [["020", "021"]]}.items():
        (split_dir / f"{name}.json").write_text(json.dumps(pairs))
    _, items = sources.discover(str(tmp_path), ffpp_splits=str(split_dir))
    found = {(Path(i.path).parent.parent.parent.name, Path(i.path).stem): i.split for i in items}
    assert found[("youtube", "010")] == "val"
    assert found[("Deepfakes", "003_000")] == "train"
    assert found[("FaceSwap", "021_020")] == "test"
    assert None not in found.values()


def test_ffpp_compression_level_must_be_chosen_when_several_are_present(tmp_path):
    make_ffpp(tmp_path, levels=("c23", "c40"))
    with pytest.raises(ValueError, match=r"several compression levels \(c23, c40\).*--ffpp_compression"):
        sources.discover(str(tmp_path))
    _, c40 = sources.discover(str(tmp_path), ffpp_compression="c40")
    assert len(c40) == 18 and all("/c40/videos/" in item.path for item in c40)
    _, every = sources.discover(str(tmp_path), ffpp_compression="all")
    assert len(every) == 36
    # The same video at two levels is one group: it can never sit in two splits.
    groups = {(Path(i.path).parts[-3], Path(i.path).stem): i.group for i in every if i.label == 0}
    assert groups[("c23", "010")] == groups[("c40", "010")]
    with pytest.raises(ValueError, match="no videos at that level.*found c23, c40"):
        sources.discover(str(tmp_path), ffpp_compression="c0")


def test_group_split_is_disjoint_deterministic_and_keeps_given_splits():
    items = [sources.Item(f"/d/{i}.mp4", i % 2, "test" if i < 3 else None, f"g{i // 3}", f"{i}.mp4")
             for i in range(60)]
    first = splits.assign_splits(items, 0.2, 0.2, seed=7)
    assert first == splits.assign_splits(items, 0.2, 0.2, seed=7)
    assert first != splits.assign_splits(items, 0.2, 0.2, seed=8)
    assert [item.split for item in first[:3]] == ["test"] * 3
    split_of_group = {}
    for item in first:
        assert split_of_group.setdefault(item.group, item.split) == item.split
    counts = {s: sum(item.split == s for item in first) for s in ("train", "val", "test")}
    assert counts["val"] == 12 and 11 <= counts["test"] <= 15


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="sum to less than 1"):
        splits.assign_splits([], 0.6, 0.5, seed=0)
