"""Finding a dataset's files: one list of Items whatever the source layout.

Layouts:
  folder    <split>/<class>/<files> (split: train/val/valid/validation/test,
            class: real/fake, any case), or <class>/<files> without splits
  manifest  a CSV with columns path,label,split[,group]
  dfdc      a folder (or folder of parts) with DFDC metadata.json files (told by
            their content: file name -> {"label": "REAL" | "FAKE", ...})
  ffpp      FaceForensics++: original_sequences/... vs manipulated_sequences/...
Items without a split get one later (dfd.convert.splits) by group, so every
source names a group: the source video or identity a file comes from.

No file under a folder source is dropped in silence: a file is an item, a row of skipped.csv
(`Findings.skipped` when it could not be read, `Findings.unused` when its place names no label,
such as a file beside the class folders), or counted in a warning naming the folder dfd did not
understand (`fakes/` beside `real/`). Folder names are read in any case, and `real/` and `Real/`
side by side are both used. Hidden files and folders (`.DS_Store`, `.git/`) are left out.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections import Counter
from pathlib import Path

from dfd.preprocess import media

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
LABEL_NAMES = ("real", "fake")
LABEL_ALIASES = {"real": 0, "0": 0, "original": 0, "fake": 1, "1": 1, "manipulated": 1}
SOURCE_TYPES = ("auto", "folder", "manifest", "dfdc", "ffpp")


@dataclasses.dataclass(frozen=True)
class Item:
    path: str           # absolute path of the file
    label: int          # 0 real, 1 fake
    split: str | None   # train/val/test, or None until dfd.convert.splits assigns one
    group: str          # files of one group never land in two splits
    source: str         # path as recorded in the example (relative to the source root)


@dataclasses.dataclass
class Findings:
    """What discovery noticed besides the items: files it could not list (rows of skipped.csv,
    as (source path, reason)) and warnings for the log and metadata.json."""

    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Files of the source not converted because the layout gives them no label (a file beside the class
    # folders, a video DFDC's metadata does not list): rows of skipped.csv that are not failed files, so
    # they do not count towards --max_skip_fraction (a README.txt must not mark a dataset incomplete).
    unused: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _reenters(path: Path, root_real: str) -> bool:
    """A link whose target lies in the source tree (or holds it): following it would visit files
    under a second label or split, or loop (`ln -s .. train/real/loop` once gave 40 copies of a
    folder of fakes, labelled real). Its target is read where it really lies, or not at all."""
    if not path.is_symlink():
        return False
    real = os.path.realpath(path)
    return _inside(real, root_real) or _inside(root_real, real)


def _visible_files(directory: Path, root: Path | None = None, findings: Findings | None = None) -> list[Path]:
    """Every regular-looking file under `directory`, sorted, hidden ones left out.

    Paths stay as the user laid them out (labels and splits come from them). Links to folders
    are followed only when they leave the source tree `root` (a dataset kept on another disk),
    never into the tree or an ancestor of it, and never round a loop outside it. A folder that
    cannot be listed becomes a row of skipped.csv in `findings`.
    """
    root = root or directory
    root_real = os.path.realpath(root)
    findings = findings if findings is not None else Findings()
    found: list[Path] = []

    def visit(folder: Path, ancestors: frozenset) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            findings.skipped.append((_relative(folder, root) + "/", f"cannot read folder: {error.strerror or error}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()   # follows links
            except OSError:
                is_dir = False
            if not is_dir:
                found.append(path)        # files, links to files, dangling links (skipped with a reason later)
                continue
            if _reenters(path, root_real):
                findings.warnings.append(f"{_relative(path, root)}: a link back into the source folder, not followed")
                continue
            real = os.path.realpath(path)
            if real in ancestors:
                findings.warnings.append(f"{_relative(path, root)}: a link loop, not followed")
                continue
            visit(path, ancestors | {real})

    visit(directory, frozenset({os.path.realpath(directory)}))
    return found


def dedupe_files(items: list[Item], findings: Findings) -> list[Item]:
    """Each real file once (by device and inode: links and hard links reach one file by two names).

    The same file under one label: the first name is kept, with a warning. Under both labels: no
    label can be trusted, so every name of it is skipped with the reason in skipped.csv.
    """
    by_file: dict[tuple[int, int], list[Item]] = {}
    order: list[object] = []
    for item in items:
        try:
            status = os.stat(item.path)
        except OSError:
            order.append(item)           # unreadable: skipped with its reason when read
            continue
        key = (status.st_dev, status.st_ino)
        if key not in by_file:
            order.append(key)
        by_file.setdefault(key, []).append(item)
    kept = []
    for entry in order:
        if isinstance(entry, Item):
            kept.append(entry)
            continue
        names = by_file[entry]
        if len({item.label for item in names}) > 1:
            for item in names:
                others = ", ".join(other.source for other in names if other is not item)
                findings.skipped.append((item.source, f"the same file as {others} under another label: "
                                                      "label unknown, not used"))
            continue
        kept.append(names[0])
        for item in names[1:]:
            findings.warnings.append(f"{item.source} is the same file as {names[0].source}: used once")
    return kept


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def parse_label(value: str, where: str) -> int:
    label = LABEL_ALIASES.get(str(value).strip().lower())
    if label is None:
        raise ValueError(f"{where}: label {value!r} is neither real nor fake (use real/fake or 0/1)")
    return label


def parse_split(value: str, where: str) -> str | None:
    value = str(value).strip().lower()
    if not value:
        return None
    if value not in SPLIT_ALIASES:
        raise ValueError(f"{where}: split {value!r} is not one of train/val/test (or empty to assign one)")
    return SPLIT_ALIASES[value]


def detect_source_type(source: Path, manifest: str | None) -> str:
    if manifest:
        return "manifest"
    if dfdc_metadata_files(source):
        return "dfdc"
    if (source / "original_sequences").is_dir() or (source / "manipulated_sequences").is_dir():
        return "ffpp"
    return "folder"


# --------------------------------------------------------------------------
# folder
# --------------------------------------------------------------------------

SPLIT_FOLDER = "a split folder (train/val/test, any case)"
CLASS_FOLDER = "a class folder (real/fake, any case)"
CLASS_FOLDERS = {"real": "real", "fake": "fake"}


def _entries(directory: Path, source: Path, findings: Findings) -> tuple[list[Path], list[Path]]:
    """(folders, files) directly in `directory`, sorted, hidden ones left out. A link back into the source
    tree is not followed (with a warning); a folder that cannot be listed is a row of skipped.csv."""
    try:
        children = sorted(directory.iterdir())
    except OSError as error:
        findings.skipped.append((_relative(directory, source) + "/", f"cannot read folder: {error.strerror or error}"))
        return [], []
    folders, files = [], []
    root_real = os.path.realpath(source)
    for child in children:
        if child.name.startswith("."):
            continue
        if not child.is_dir():
            files.append(child)
        elif _reenters(child, root_real):
            findings.warnings.append(f"{_relative(child, source)}: a link back into the source folder, not followed")
        else:
            folders.append(child)
    return folders, files


def _recognised(folders: list[Path], names: dict[str, str], source: Path, findings: Findings,
                expected: str) -> list[tuple[str, Path]]:
    """(meaning, folder) of each folder whose name, in any case, is in `names`, in name order.

    Two folders of one meaning (`real/` and `Real/`, `val/` and `valid/`) are both used, with a
    warning; a folder of any other name is not read, and a warning names it with its file count.
    """
    found = [(names[folder.name.lower()], folder) for folder in folders if folder.name.lower() in names]
    for meaning in sorted({meaning for meaning, _ in found}):
        same = [f"{_relative(folder, source)}/" for other, folder in found if other == meaning]
        if len(same) > 1:
            findings.warnings.append(f"{' and '.join(same)} {'both' if len(same) == 2 else 'all'} name {meaning} "
                                     "(folder names are read in any case): the files of each are used")
    for folder in folders:
        if folder.name.lower() not in names:
            _warn_unread_folder(folder, source, findings, expected)
    return found


def _warn_unread_folder(folder: Path, source: Path, findings: Findings, expected: str) -> None:
    count = len(_visible_files(folder, source, Findings()))   # a folder dfd does not read adds no skips
    if count:
        findings.warnings.append(f"{_relative(folder, source)}/ is not {expected}: its {count} file(s) are "
                                 "not converted (rename the folder, or list its files in a --manifest)")


def _note_loose_files(files: list[Path], source: Path, findings: Findings, expected: str) -> None:
    for path in files:
        findings.unused.append((_relative(path, source), f"not inside {expected}: label unknown, not converted"))


def _class_items(directory: Path, split: str | None, source: Path, findings: Findings) -> list[Item]:
    folders, files = _entries(directory, source, findings)
    _note_loose_files(files, source, findings, CLASS_FOLDER)
    classes = _recognised(folders, CLASS_FOLDERS, source, findings, CLASS_FOLDER)
    items = []
    for name, class_dir in sorted(classes, key=lambda entry: LABEL_ALIASES[entry[0]]):   # real first, as before
        for path in _visible_files(class_dir, source, findings):
            # Without identities in the layout, each file is its own group.
            rel = _relative(path, source)
            items.append(Item(str(path.absolute()), LABEL_ALIASES[name], split, os.path.splitext(rel)[0], rel))
    return items


def discover_folder(source: Path, findings: Findings | None = None) -> list[Item]:
    findings = findings if findings is not None else Findings()
    if not source.is_dir():
        raise ValueError(f"--source={source} is not a folder")
    folders, files = _entries(source, source, findings)
    items = []
    if any(folder.name.lower() in SPLIT_ALIASES for folder in folders):
        _note_loose_files(files, source, findings, SPLIT_FOLDER)
        for split, split_dir in _recognised(folders, SPLIT_ALIASES, source, findings, SPLIT_FOLDER):
            items += _class_items(split_dir, split, source, findings)
    else:
        items = _class_items(source, None, source, findings)
    if not items:
        held = ", ".join(f"{folder.name}/" for folder in folders[:5]) or "no folders"
        raise ValueError(
            f"no files found under {source} (it holds {held}): expected <split>/<class>/<files> or <class>/<files> "
            "with split in train/val/valid/validation/test and class in real/fake (any case); "
            "for other layouts pass --manifest=FILE.csv")
    return items


# --------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------

def manifest_text(manifest: Path) -> str:
    """The manifest's text: UTF-8, with the byte-order mark spreadsheets write (as "CSV UTF-8") dropped (read
    as part of the first column's name, it made the header "lack" the path column)."""
    data = manifest.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{manifest} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}): save it "
                         "as UTF-8 (a spreadsheet's \"CSV UTF-8\"), or convert it, e.g. iconv -f latin1 -t utf-8"
                         ) from None


def discover_manifest(manifest: Path, source: Path | None, findings: Findings | None = None) -> list[Item]:
    """CSV with path,label,split[,group]; relative paths are taken from --source or the CSV's folder.

    A path listed twice is used once, from its first row, with a warning that names both lines
    (and says so when the rows disagree on label or split)."""
    findings = findings if findings is not None else Findings()
    first_row: dict[str, tuple[int, int, str | None]] = {}
    if not manifest.is_file():
        raise ValueError(f"--manifest={manifest} does not exist")
    root = source if source is not None else manifest.parent
    items = []
    with io.StringIO(manifest_text(manifest), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip().lower() for c in reader.fieldnames or []}
        missing = {"path", "label", "split"} - columns
        if missing:
            raise ValueError(f"{manifest} lacks columns {sorted(missing)}: the header must be path,label,split[,group]")
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            where = f"{manifest}:{line}"
            if not row["path"]:
                raise ValueError(f"{where}: empty path")
            path = Path(row["path"])
            full = path if path.is_absolute() else root / path
            group = row.get("group") or os.path.splitext(row["path"])[0]
            label, split = parse_label(row["label"], where), parse_split(row["split"], where)
            key = os.path.normpath(str(full.absolute()))
            if key in first_row:
                line0, label0, split0 = first_row[key]
                conflict = (f"conflicting rows: label/split {LABEL_NAMES[label0]}/{split0 or '-'} on line {line0}, "
                            f"{LABEL_NAMES[label]}/{split or '-'} here" if (label0, split0) != (label, split)
                            else "listed twice")
                findings.warnings.append(f"{where}: {row['path']} {conflict}; line {line0} is used")
                continue
            first_row[key] = (line, label, split)
            items.append(Item(str(full.absolute()), label, split, group, _relative(full, root)))
    if not items:
        raise ValueError(f"{manifest} lists no files")
    return items


# --------------------------------------------------------------------------
# DFDC
# --------------------------------------------------------------------------

DFDC_METADATA = "metadata.json"
# Far above any DFDC part's metadata.json (about 1 MB): a larger file is not read to find out.
DFDC_METADATA_MAX_BYTES = 256 * 2**20


def is_dfdc_metadata(path: Path) -> bool:
    """DFDC's schema: a non-empty JSON object mapping each video's file name to an object, with labels
    REAL or FAKE. Anything else named metadata.json (a dfd dataset copied into the source, `{}`) is not."""
    try:
        if not path.is_file() or path.stat().st_size > DFDC_METADATA_MAX_BYTES:
            return False
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(entries, dict) or not entries or not all(isinstance(v, dict) for v in entries.values()):
        return False
    return any(str(entry.get("label", "")).upper() in ("REAL", "FAKE") for entry in entries.values())


def dfdc_metadata_files(source: Path) -> list[Path]:
    """The DFDC metadata.json of `source` (a part folder) or of its parts (`dfdc_train_part_N/`), by content."""
    if is_dfdc_metadata(source / DFDC_METADATA):
        return [source / DFDC_METADATA]
    return [path for path in sorted(source.glob(f"*/{DFDC_METADATA}")) if is_dfdc_metadata(path)]


def discover_dfdc(source: Path, findings: Findings | None = None) -> list[Item]:
    """DFDC: metadata.json maps file name -> {label: REAL|FAKE, original: source video}.

    The group of a fake is its `original`, of a real video itself, so a fake
    never sits in another split than the video it was made from. DFDC's own
    `split` field says "train" for the whole training set, so splits are made here.
    Files the metadata does not list are rows of skipped.csv; other folders beside the parts, warnings.
    """
    findings = findings if findings is not None else Findings()
    metadata_files = dfdc_metadata_files(source)
    if not metadata_files:
        raise ValueError(f"no DFDC metadata under {source}: expected a metadata.json (in the folder or in each part "
                         "folder) mapping each video's file name to {\"label\": \"REAL\" or \"FAKE\", ...}; "
                         "for a folder of real/ and fake/ pass --source_type=folder")
    items = []
    for metadata_file in metadata_files:
        entries = json.loads(metadata_file.read_text())
        part = metadata_file.parent
        for name, entry in sorted(entries.items()):
            where = f"{metadata_file} entry {name!r}"
            label = parse_label(entry.get("label", ""), where)
            original = str(entry.get("original") or name)
            group = os.path.splitext(original if label == 1 else name)[0]
            path = part / name
            items.append(Item(str(path.absolute()), label, None, group, _relative(path, source)))
    _note_unlisted(source, metadata_files, {os.path.normpath(item.path) for item in items}, findings)
    return items


def _note_unlisted(source: Path, metadata_files: list[Path], listed: set[str], findings: Findings) -> None:
    """Accounts for the files of a DFDC source that its metadata does not name."""
    parts = [path.parent for path in metadata_files]
    for part in parts:
        for path in _visible_files(part, source, findings):
            if path not in metadata_files and os.path.normpath(str(path.absolute())) not in listed:
                findings.unused.append((_relative(path, source),
                                        f"not listed in {_relative(part / DFDC_METADATA, source)}: "
                                        "label unknown, not converted"))
    if parts == [source]:
        return
    folders, files = _entries(source, source, findings)
    _note_loose_files(files, source, findings, "a DFDC part folder")
    for folder in folders:
        if folder not in parts:
            _warn_unread_folder(folder, source, findings, "a DFDC part folder (one with DFDC's metadata.json)")


# --------------------------------------------------------------------------
# FaceForensics++
# --------------------------------------------------------------------------

class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _ffpp_ids(stem: str) -> list[str]:
    # "000" (original), "000_003" (target 000, source face 003), DFD: "01__walking",
    # "01_02__walking__ABC" -> the identities are the part before "__".
    return stem.split("__")[0].split("_")


def load_ffpp_splits(directory: Path) -> dict[str, str]:
    """Official FF++ split files (train.json, val.json, test.json: lists of id pairs) to {id: split}."""
    by_id = {}
    for split in ("train", "val", "test"):
        path = directory / f"{split}.json"
        if not path.is_file():
            raise ValueError(f"--ffpp_splits={directory} lacks {split}.json (expected train/val/test.json)")
        for pair in json.loads(path.read_text()):
            for video_id in pair:
                by_id[str(video_id)] = split
    return by_id


def discover_ffpp(source: Path, splits_dir: Path | None, compression: str = "auto",
                  findings: Findings | None = None) -> list[Item]:
    """original_sequences/<set>/<compression>/videos/* are real; manipulated_sequences/<method>/... fake.

    Groups join every identity a video involves (a fake 000_003 joins 000 and 003),
    so official pairs or, without split files, connected identities share a split.
    compression: the level to use (c0, c23, c40, ...), "all", or "auto" (the only level present;
    several present is an error, since using all of them silently repeats every video).
    """
    official = load_ffpp_splits(splits_dir) if splits_dir else None
    found = _ffpp_videos(source, findings)
    if not found:
        raise ValueError(f"no videos under {source}/original_sequences/*/*/videos or manipulated_sequences/*/*/videos")
    found = _select_compression(found, compression, source)
    union = _UnionFind()
    for _, _, _, ids in found:
        for other in ids[1:]:
            union.union(ids[0], other)
    items = []
    for path, label, _, ids in found:
        split = None
        if official is not None:
            split = official.get(ids[0].split(":", 1)[1]) if ids[0].startswith("youtube:") else None
        items.append(Item(str(path.absolute()), label, split, union.find(ids[0]), _relative(path, source)))
    return items


def _select_compression(found: list, compression: str, source: Path) -> list:
    levels = sorted({level for _, _, level, _ in found})
    if compression == "all":
        return found
    if compression == "auto":
        if len(levels) == 1:
            return found
        raise ValueError(
            f"{source} holds FaceForensics++ videos at several compression levels ({', '.join(levels)}): the same "
            "video at each level. Pick one with --ffpp_compression (c23 is the usual benchmark setting), or "
            "--ffpp_compression=all to use every level (each video then appears once per level).")
    if compression not in levels:
        raise ValueError(f"--ffpp_compression={compression}: no videos at that level under {source}; "
                         f"found {', '.join(levels)}")
    return [entry for entry in found if entry[2] == compression]


def _ffpp_videos(source: Path, findings: Findings | None = None) -> list[tuple[Path, int, str, list[str]]]:
    """(path, label, compression level, identity ids) of every FF++ video under `source`."""
    found = []
    for label, top in ((0, "original_sequences"), (1, "manipulated_sequences")):
        for path in _visible_files(source / top, source, findings) if (source / top).is_dir() else []:
            parts = path.relative_to(source / top).parts
            # <set or method>/<compression>/videos/<file>; masks/ hold no frames to learn from.
            if len(parts) != 4 or parts[2] != "videos" or parts[1] == "masks":
                continue
            namespace = "actors" if parts[0] in ("actors", "DeepFakeDetection") else "youtube"
            ids = [f"{namespace}:{i}" for i in _ffpp_ids(path.stem)]
            found.append((path, label, parts[1], ids))
    return found


def discover(source: str | None, source_type: str = "auto", manifest: str | None = None,
             ffpp_splits: str | None = None, ffpp_compression: str = "auto",
             findings: Findings | None = None) -> tuple[str, list[Item]]:
    """(source type, items) for the given source, each real file once; raises ValueError with what to fix.

    `findings` (if given) collects folders that could not be read and warnings."""
    findings = findings if findings is not None else Findings()
    source_type, items = _discover(source, source_type, manifest, ffpp_splits, ffpp_compression, findings)
    if findings.unused:   # rows of skipped.csv nobody would look for without a word on the terminal
        findings.warnings.append(f"{len(findings.unused)} file(s) of the source are not converted, their place in "
                                 "the layout giving no label: listed in skipped.csv")
    return source_type, dedupe_files(items, findings)


def _discover(source, source_type, manifest, ffpp_splits, ffpp_compression, findings) -> tuple[str, list[Item]]:
    if source_type not in SOURCE_TYPES:
        raise ValueError(f"source type must be one of {SOURCE_TYPES}, got {source_type!r}")
    root = Path(source) if source else None
    if root is None and not manifest:
        raise ValueError("give --source=DIR (a dataset folder) or --manifest=FILE.csv")
    if root is not None and not root.is_dir():
        raise ValueError(f"--source={root} is not a folder")
    if source_type == "auto":
        source_type = detect_source_type(root, manifest) if root is not None else "manifest"
    if source_type == "manifest":
        if not manifest:
            raise ValueError("source type 'manifest' needs --manifest=FILE.csv")
        return source_type, discover_manifest(Path(manifest), root, findings)
    if source_type == "dfdc":
        return source_type, discover_dfdc(root, findings)
    if source_type == "ffpp":
        return source_type, discover_ffpp(root, Path(ffpp_splits) if ffpp_splits else None, ffpp_compression,
                                          findings)
    return source_type, discover_folder(root, findings)


def detect_kind(items: list[Item]) -> str:
    """'image' or 'video': what most file extensions say (content is checked per file later)."""
    kinds = Counter(media.extension_kind(item.path) for item in items)
    kinds.pop(None, None)
    if not kinds:
        raise ValueError("cannot tell whether the files are images or videos from their extensions; pass --kind")
    return kinds.most_common(1)[0][0]
