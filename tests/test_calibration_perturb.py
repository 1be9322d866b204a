"""Calibration (ECE, Brier, temperature scaling) and robustness (--perturb) on tiny data, end to end."""

import json
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from dfd.data.metadata import DatasetMetadata
from dfd.evaluation import calibration, evaluate, export, loading, perturb
from dfd.testing.fake_shards import write_fake_dataset

sys.path.insert(0, str(Path(__file__).parent))
# video_run: an image model trained on 4-frame video records (a module fixture: this module gets its own).
from test_evaluate_predict_export import SIZE, make_run, video_run  # noqa: E402,F401

CALIBRATION_COUNTS = {"train": (2, 2), "val": (40, 40), "test": (40, 40)}


def overconfident_model(noise_weight: float) -> keras.Model:
    """P(fake) from the centre pixel's red value (fake_shards' fakes are brighter in the centre) plus
    `noise_weight` times two corner pixels (noise in both classes), on a logit 20 times too steep: an
    overconfident model whose classes overlap (perfectly separated when noise_weight is 0)."""
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    red = keras.layers.Conv2D(1, 1, use_bias=False, name="red")(keras.layers.Rescaling(1 / 255)(inputs))
    head = keras.layers.Dense(1, activation="sigmoid", name="head")
    model = keras.Model(inputs, head(keras.layers.Flatten()(red)))
    model.get_layer("red").set_weights([np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1)])
    weights = np.zeros((SIZE * SIZE, 1))
    weights[(SIZE // 2) * SIZE + SIZE // 2] = 1.0
    weights[0] = weights[SIZE - 1] = noise_weight
    # Pixels are U[0, 120) / 255 (mean 0.235), the fakes' centre 120 more: the midpoint between the classes.
    middle = 0.47 + 0.47 * noise_weight
    head.set_weights([20 * weights, np.array([-20 * middle])])
    return model


def image_run(root: Path, noise_weight: float, seed: int = 0):
    """A run of overconfident_model on image records with 80 val and 80 test images."""
    data_dir = write_fake_dataset(root / "data", kind="image", size=SIZE, counts=CALIBRATION_COUNTS, seed=seed)
    spec = DatasetMetadata.load(data_dir).preprocessing
    return make_run(root / "run", spec, overconfident_model(noise_weight), data_dir), data_dir


@pytest.fixture(scope="module")
def calibration_run(tmp_path_factory):
    """An overconfident image model on 80 val images whose classes overlap: temperature scaling helps."""
    return image_run(tmp_path_factory.mktemp("calibration_run"), noise_weight=1.0)


def draw(seed: int, count: int, steepness: float) -> tuple[np.ndarray, list]:
    """Labels drawn from sigmoid(z) and one score per example sigmoid(steepness z): calibrated at 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, count)
    labels = (rng.random(count) < 1 / (1 + np.exp(-logits))).astype(int)
    return labels, [[score] for score in 1 / (1 + np.exp(-steepness * logits))]


def test_a_temperature_is_kept_only_when_trusted_and_better_on_held_out_folds():
    few = calibration.decide_temperature(*draw(0, 49, 3.0))
    assert not few.kept and few.temperature == 1.0 and "has 49 examples" in few.reason and "at least 50" in few.reason
    labels = np.array([0] * 30 + [1] * 30)
    separated = calibration.decide_temperature(labels, [[0.2]] * 30 + [[0.9]] * 30)
    assert not separated.kept and "perfectly separated" in separated.reason
    # An overconfident model (logits 3 times too steep): the held-out folds' loss falls, T near 3 is kept.
    sharp = calibration.decide_temperature(*draw(0, 400, 3.0))
    assert sharp.kept and sharp.temperature == pytest.approx(3.0, rel=0.25) and sharp.folds == 5
    assert sharp.held_out_loss_fitted < sharp.held_out_loss_raw
    assert sharp.temperature == calibration.fit_temperature(*draw(0, 400, 3.0))   # the fit on every example
    # A calibrated model: a temperature fitted on 4 folds does worse on the fifth than none.
    calibrated = calibration.decide_temperature(*draw(1, 200, 1.0))
    assert not calibrated.kept and calibrated.held_out_loss_fitted >= calibrated.held_out_loss_raw
    assert "does not lower the held-out log-loss" in calibrated.reason
    assert calibration.cross_validated_losses(*draw(1, 200, 1.0)) == (calibrated.held_out_loss_raw,
                                                                      calibrated.held_out_loss_fitted)


def test_ece_and_brier_by_hand():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.1, 0.9, 0.7])
    # Bins: 0.1 (two real: fraction 0, mean 0.1), 0.7 (fake: 1 vs 0.7), 0.9 (fake: 1 vs 0.9).
    assert calibration.expected_calibration_error(labels, scores) == pytest.approx((2 * 0.1 + 0.3 + 0.1) / 4)
    assert calibration.brier_score(labels, scores) == pytest.approx((0.01 + 0.01 + 0.01 + 0.09) / 4)
    assert calibration.expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0   # 1.0 falls in the last bin
    assert sum(row["count"] for row in calibration.bin_table(labels, scores)) == 4


def test_temperature_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    overconfident = 1 / (1 + np.exp(-3 * true_logits))      # logits three times too large
    temperature = calibration.fit_temperature(labels, [[score] for score in overconfident])
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert temperature == calibration.fit_temperature(labels, [[score] for score in overconfident])  # deterministic
    fixed = calibration.apply_temperature(overconfident, temperature)
    assert np.all(np.diff(fixed[np.argsort(overconfident)]) >= 0)   # order kept (ties only where clipped)
    assert (calibration.expected_calibration_error(labels, fixed)
            < calibration.expected_calibration_error(labels, overconfident) / 3)
    # A threshold mapped to the calibrated scale makes the same decisions.
    mapped = calibration.to_calibrated_threshold(0.3, temperature)
    assert np.array_equal(overconfident >= 0.3, fixed >= mapped)
    with pytest.raises(ValueError, match="both real and fake"):
        calibration.fit_temperature([1, 1], [[0.5], [0.6]])


def test_perturbations_change_frames_identity_levels_do_not_and_noise_is_seeded():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    for name, level in (("jpeg", 50), ("scale", 0.5), ("blur", 1), ("noise", 5)):
        changed = perturb.perturb_frames(frames, name, level, np.random.default_rng(1))
        assert changed.shape == frames.shape and changed.dtype == np.uint8
        assert np.abs(changed.astype(int) - frames).mean() > 1, name
    for name, level in (("scale", 1), ("blur", 0), ("noise", 0)):
        assert np.array_equal(perturb.perturb_frames(frames, name, level, np.random.default_rng(1)), frames)
    first = perturb.transform_for("noise", 5, seed=3, index=0)(frames, 0)
    assert np.array_equal(first, perturb.transform_for("noise", 5, seed=3, index=0)(frames, 0))
    assert not np.array_equal(first, perturb.transform_for("noise", 5, seed=4, index=0)(frames, 0))
    assert perturb.parse(["jpeg:90,50", "blur:1"]) == [("jpeg", (90.0, 50.0)), ("blur", (1.0,))]
    for bad in ("jpeg", "gamma:2", "jpeg:0", "scale:2", "noise:x"):
        with pytest.raises(ValueError, match="--perturb"):
            perturb.parse([bad])


def test_evaluate_calibrate_and_perturb_then_predict_and_export_use_the_temperature(calibration_run, tmp_path,
                                                                                        capsys):
    layout, _ = calibration_run
    # A threshold chosen earlier on raw scores: it must keep making the same decisions once calibrated.
    layout.threshold.write_text(json.dumps({"threshold": 0.3, "method": "val_youden"}))
    result = evaluate.evaluate(layout.root, calibrate=True, perturbations=["noise:0,40", "jpeg:60"])
    printed = capsys.readouterr().out
    assert "Temperature scaling fitted on the val split" in printed and "ECE" in printed
    written = json.loads((layout.root / calibration.CALIBRATION_FILE).read_text())
    temperature = written["temperature"]
    assert temperature == result["temperature"] > 2   # a logit 20 times too steep wants a large T
    fit = result["calibration_fit"]
    assert fit["kept"] and fit["written"] and "lowers the held-out log-loss" in fit["reason"]
    assert written["cross_validation"]["held_out_loss_fitted"] < written["cross_validation"]["held_out_loss_raw"]
    assert fit["after"]["roc_auc"] == pytest.approx(fit["before"]["roc_auc"])   # order unchanged
    assert fit["after"]["loss"] < fit["before"]["loss"]   # and on the test split too
    assert f"Temperature {temperature:.4f} written to" in printed
    saved = json.loads((layout.eval_dir("test") / "metrics.json").read_text())
    assert 0 <= saved["calibration"]["ece"] <= 1 and saved["calibration"]["ece_bins"] == 15
    assert saved["calibration"]["brier"] == pytest.approx(fit["after"]["brier"])
    table = saved["robustness"]
    assert table["threshold"] == pytest.approx(calibration.to_calibrated_threshold(0.3, temperature))
    assert table["perturbations"]["noise"][0] == {"level": 0.0, **table["unperturbed"]}   # identity level
    assert [row["level"] for row in table["perturbations"]["jpeg"]] == [60.0]
    for name in ("reliability", "robustness"):
        assert (layout.eval_dir("test") / f"{name}.png").read_bytes()[:4] == b"\x89PNG"

    loaded = loading.load(layout.root)
    assert loaded.temperature == temperature and "calibration.json" in loaded.calibration_source
    assert loaded.threshold == pytest.approx(calibration.to_calibrated_threshold(0.3, temperature))
    frames = np.random.default_rng(0).integers(0, 120, (3, SIZE, SIZE, 3), dtype=np.uint8)
    raw = np.asarray(loaded.model.predict_on_batch(frames))[:, 0]
    assert np.allclose(loaded.score(frames), calibration.apply_temperature(raw, temperature), atol=1e-6)

    # The export bakes the temperature into the SavedModel (verified inside export) and keeps the file.
    export.export(layout.root, tmp_path / "export", verbose=False)
    assert (tmp_path / "export" / calibration.CALIBRATION_FILE).is_file()
    exported = loading.load(tmp_path / "export")
    assert exported.temperature == temperature
    assert exported.threshold == pytest.approx(loaded.threshold)

    # predict from the export: calibrated entries, and explanations from the model.keras beside the SavedModel.
    import cv2

    from dfd.predict import predict_command

    photo = tmp_path / "face.png"
    assert cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    capsys.readouterr()
    assert predict_command(str(tmp_path / "export"), [str(photo)], output=str(tmp_path / "out.json"),
                           explain=str(tmp_path / "explain")) == 0
    entry = json.loads((tmp_path / "out.json").read_text())[0]
    assert entry["temperature"] == pytest.approx(temperature, abs=1e-6) and Path(entry["explanation"]).is_file()
    printed = capsys.readouterr().err
    assert "calibrated P(fake)" in printed and "the SavedModel beside it has no layers" in printed


def test_perturbed_scores_are_deterministic(video_run):  # noqa: F811 (imported fixture)
    layout, data_dir = video_run
    loaded = loading.load(layout.root)
    dataset = evaluate.open_data(loaded, data_dir)
    transform = perturb.transform_for("noise", 30, seed=0, index=0)
    first = evaluate.score_split(loaded, dataset, "test", 4, transform=transform).scores
    again = evaluate.score_split(loaded, dataset, "test", 4, transform=transform).scores
    plain = evaluate.score_split(loaded, dataset, "test", 4).scores
    assert np.array_equal(first, again)
    assert np.abs(np.log(first) - np.log(plain)).max() > 0.1   # saturated scores: compare log P


def test_calibrate_writes_nothing_where_a_fit_cannot_be_trusted(video_run, tmp_path, capsys):  # noqa: F811
    # 8 val clips (video_run): too few. An earlier calibration.json stays, and so do the run's decisions.
    run = shutil.copytree(video_run[0].root, tmp_path / "run")
    earlier = json.dumps({"method": "temperature", "temperature": 2.0, "fitted_on": "earlier"})
    (run / calibration.CALIBRATION_FILE).write_text(earlier)
    result = evaluate.evaluate(run, calibrate=True)
    printed = capsys.readouterr().out
    assert (run / calibration.CALIBRATION_FILE).read_text() == earlier
    assert not result["calibration_fit"]["kept"] and "has 8 examples" in result["calibration_fit"]["reason"]
    assert result["temperature"] == 2.0 == loading.load(run).temperature   # reported as the run decides
    assert "temperature scaling not kept: the val split has 8 examples" in printed
    assert "the earlier" in printed and "keep using it" in printed
    # The scores are those of the earlier temperature: the same as evaluating without --calibrate.
    plain = evaluate.evaluate(run, print_report=False)
    assert plain["at_0.5"]["loss"] == pytest.approx(result["at_0.5"]["loss"])

    # 80 val images, perfectly separated: refused, and with no earlier file none is written.
    layout, _ = image_run(tmp_path / "separated", noise_weight=0.0)
    separated = evaluate.evaluate(layout.root, calibrate=True)
    assert not (layout.root / calibration.CALIBRATION_FILE).exists()
    assert "perfectly separated" in separated["calibration_fit"]["reason"] and separated["temperature"] == 1.0
    assert "use raw probabilities" in capsys.readouterr().out
