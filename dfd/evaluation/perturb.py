"""Robustness to what happens to shared media: the stored face crops, perturbed, scored again.

    parse(["jpeg:90,70,50", "scale:0.5", ...]) -> [(name, (levels...)), ...]
    perturb_frames(frames, name, level, rng) -> frames     # uint8 (..., H, W, 3) in, same shape out
    robustness(score, perturbations, threshold, seed, baseline) -> dict   # the metrics.json table
    robustness_figure(table) -> matplotlib figure          # ROC AUC against level, one panel per perturbation

Levels: jpeg = re-encoding quality (1-100); scale = factor the crop is shrunk by and scaled back up
(INTER_AREA down, as a platform's resizer would; bilinear up), 1 = unchanged; blur = Gaussian sigma in
pixels, 0 = unchanged; noise = Gaussian sigma in grey levels, 0 = unchanged. The crops are perturbed
after decoding, exactly as stored in the records (so the face detector sees nothing new: this measures
the classifier, not the detector). Noise is seeded per (perturbation, level, batch): deterministic for a
given seed and batch size.
"""

from __future__ import annotations

import numpy as np

from dfd.evaluation import metrics

PERTURBATIONS = ("jpeg", "scale", "blur", "noise")
_RANGES = {"jpeg": (1, 100), "scale": (0.01, 1.0), "blur": (0.0, 50.0), "noise": (0.0, 255.0)}


def parse(values) -> list[tuple[str, tuple[float, ...]]]:
    """'name:level,level' flag values (repeatable) -> [(name, levels)], in the order given."""
    parsed = []
    for value in values or ():
        name, _, levels = str(value).partition(":")
        name = name.strip().lower()
        if name not in PERTURBATIONS or not levels:
            raise ValueError(f"--perturb={value!r}: expected NAME:LEVEL[,LEVEL...] with NAME one of "
                             f"{', '.join(PERTURBATIONS)}, e.g. --perturb=jpeg:90,70,50")
        try:
            numbers = tuple(float(level) for level in levels.split(",") if level.strip())
        except ValueError:
            raise ValueError(f"--perturb={value!r}: levels must be numbers, e.g. {name}:"
                             f"{'90,70' if name == 'jpeg' else '1,2'}") from None
        low, high = _RANGES[name]
        bad = [level for level in numbers if not low <= level <= high]
        if bad or not numbers:
            raise ValueError(f"--perturb={value!r}: {name} levels must be in [{low:g}, {high:g}], got {bad or 'none'}")
        parsed.append((name, numbers))
    return parsed


def _each_frame(frames: np.ndarray, function) -> np.ndarray:
    flat = frames.reshape((-1,) + frames.shape[-3:])
    return np.stack([function(frame) for frame in flat]).reshape(frames.shape)


def perturb_frames(frames: np.ndarray, name: str, level: float, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB frames of any leading shape (..., H, W, 3), perturbed; identity levels return a copy."""
    import cv2  # OpenCV is the converter's decoder too: the same JPEG codec as the records

    frames = np.asarray(frames, dtype=np.uint8)
    height, width = frames.shape[-3:-1]
    if name == "jpeg":
        def reencode(frame):
            ok, encoded = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(level)])
            if not ok:
                raise ValueError(f"JPEG encoding at quality {level} failed")
            return cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
        return _each_frame(frames, reencode)
    if name == "scale":
        if level >= 1.0:
            return frames.copy()
        small = (max(1, round(width * level)), max(1, round(height * level)))
        return _each_frame(frames, lambda frame: cv2.resize(cv2.resize(frame, small, interpolation=cv2.INTER_AREA),
                                                            (width, height), interpolation=cv2.INTER_LINEAR))
    if name == "blur":
        if level <= 0:
            return frames.copy()
        return _each_frame(frames, lambda frame: cv2.GaussianBlur(frame, (0, 0), sigmaX=float(level),
                                                                  borderType=cv2.BORDER_REFLECT_101))
    if name == "noise":
        if level <= 0:
            return frames.copy()
        noisy = frames.astype(np.float32) + rng.normal(0.0, level, frames.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")


def transform_for(name: str, level: float, seed: int, index: int):
    """A score_split transform: each batch gets its own generator, fixed by (seed, perturbation, level, batch)."""
    def transform(frames, batch_index):
        rng = np.random.default_rng([seed, PERTURBATIONS.index(name), index, batch_index])
        return perturb_frames(frames, name, level, rng)
    return transform


def _row(scored, threshold: float) -> dict:
    computed = metrics.compute_metrics(scored.labels, scored.scores, threshold)
    return {"roc_auc": computed["roc_auc"], "accuracy": computed["accuracy"], "loss": computed["loss"]}


def robustness(score, perturbations, threshold: float, seed: int = 0, baseline=None,
               progress=print) -> dict:
    """The table: ROC AUC and accuracy at `threshold` per perturbation level.

    score(transform) -> score_split's result for the split under `transform` (None: unperturbed).
    """
    baseline = baseline if baseline is not None else score(None)
    table = {"threshold": float(threshold), "seed": int(seed), "unperturbed": _row(baseline, threshold),
             "perturbations": {}}
    for name, levels in perturbations:
        rows = table["perturbations"].setdefault(name, [])
        for index, level in enumerate(levels):
            row = {"level": level, **_row(score(transform_for(name, level, seed, index)), threshold)}
            rows.append(row)
            if progress is not None:
                auc = "undefined" if row["roc_auc"] is None else f"{row['roc_auc']:.4f}"
                progress(f"perturbation {name}:{level:g}: ROC AUC {auc}, accuracy {row['accuracy']:.4f}")
    return table


_AXIS = {"jpeg": "JPEG quality", "scale": "scale factor", "blur": "blur sigma (pixels)",
         "noise": "noise sigma (grey levels)"}


def robustness_figure(table: dict):
    """ROC AUC against level, one panel per perturbation; the unperturbed AUC as a dashed line."""
    from dfd.evaluation.plots import plt  # pyplot through plots, which sets the Agg backend first

    names = list(table["perturbations"])
    figure, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names) + 0.6, 3.0), dpi=100, squeeze=False)
    base = table["unperturbed"]["roc_auc"]
    for axis, name in zip(axes[0], names, strict=True):
        rows = table["perturbations"][name]
        levels = [row["level"] for row in rows]
        aucs = [np.nan if row["roc_auc"] is None else row["roc_auc"] for row in rows]
        axis.plot(levels, aucs, "o-", label="perturbed")
        if base is not None:
            axis.axhline(base, color="grey", linestyle="--", label=f"none {base:.3f}")
        if name == "jpeg" or name == "scale":
            axis.invert_xaxis()   # left to right: milder to harsher
        axis.set(xlabel=_AXIS[name], ylim=(0, 1.02), title=name)
        axis.legend(loc="lower left", fontsize=7)
    axes[0][0].set_ylabel("ROC AUC")
    figure.tight_layout()
    return figure
