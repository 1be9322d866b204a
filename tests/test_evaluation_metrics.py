"""Metrics, threshold choice and aggregation against values computed by hand."""

import math

import numpy as np
import pytest

from dfd.evaluation import metrics, plots, report

# Two real (0.1, 0.4) and two fake (0.35, 0.8) scores.
LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def test_metrics_on_four_scores():
    result = metrics.compute_metrics(LABELS, SCORES, threshold=0.5)
    # Fake beats real in 3 of the 4 (fake, real) pairs: 0.35>0.1, 0.8>0.1, 0.8>0.4.
    assert result["roc_auc"] == pytest.approx(0.75)
    # Called fake at 0.5: only 0.8. TN=2 FP=0 FN=1 TP=1.
    assert result["confusion_matrix"] == [[2, 0], [1, 1]]
    assert result["accuracy"] == pytest.approx(0.75)
    expected_loss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert result["loss"] == pytest.approx(expected_loss)
    # Ranked: 0.8 fake (precision 1 at recall .5), 0.4 real, 0.35 fake (precision 2/3 at recall 1).
    assert result["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Calling 0.4 and up fake: one of two real called fake, one of two fake missed. Any threshold
    # in (0.35, 0.4] gives that point; the middle of the gap is chosen.
    assert result["eer"] == pytest.approx(0.5)
    assert result["eer_threshold"] == pytest.approx(0.375)
    # Youden's J is 0.5 at 0.8 (first) and at 0.35; mid-gap below 0.8 is 0.6.
    assert metrics.choose_threshold(LABELS, SCORES, "val_youden") == pytest.approx(0.6)
    assert result["classification_report"]["fake"]["recall"] == pytest.approx(0.5)
    assert result["classification_report"]["real"]["precision"] == pytest.approx(2 / 3)
    assert result["class_counts"] == {"real": 2, "fake": 2}
    assert result["notes"] == []


def test_eer_is_interpolated_between_roc_points():
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.5, 0.9]
    # ROC points (FPR, FNR): at 0.6 (1/3, 1/2), at 0.5 (1/3, 0). FPR - FNR goes -1/6 -> +1/3,
    # crossing one third of the way: EER = 1/3; 0.6 is the closer operating point, 0.55 mid-gap below it.
    eer, threshold = metrics.equal_error_rate(labels, scores)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.55)
    # TPR - FPR: 0.5 at 0.9, 1/6 at 0.6, 2/3 at 0.5, 1/3 at 0.2: the point at 0.5, mid-gap 0.35.
    assert metrics.choose_threshold(labels, scores, "val_youden") == pytest.approx(0.35)
    assert metrics.choose_threshold(labels, scores, "val_eer") == pytest.approx(0.55)
    # Separated classes: the threshold falls between them, not on the lowest fake score.
    assert metrics.choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], "val_eer") == pytest.approx(0.5)
    assert metrics.choose_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], "val_youden") == pytest.approx(0.5)
    assert metrics.choose_threshold(labels, scores, "0.5") == 0.5
    # The threshold is applied as score >= threshold: 0.6 calls the 0.6 real and the 0.9 fake fake.
    assert metrics.compute_metrics(labels, scores, 0.6)["confusion_matrix"] == [[2, 1], [1, 1]]


def test_log_loss_is_clipped():
    loss = metrics.log_loss([1, 0], [0.0, 1.0])
    assert math.isfinite(loss)
    assert loss == pytest.approx(-math.log(metrics.LOG_LOSS_EPSILON), rel=1e-6)


def test_single_class_split_gives_none_with_notes():
    result = metrics.compute_metrics([0, 0, 0], [0.1, 0.7, 0.2], threshold=0.5)
    assert result["roc_auc"] is None and result["eer"] is None and result["average_precision"] is None
    assert len(result["notes"]) == 2 and "only 'real'" in result["notes"][0]
    assert result["confusion_matrix"] == [[2, 1], [0, 0]]
    assert result["accuracy"] == pytest.approx(2 / 3)
    only_fake = metrics.compute_metrics([1, 1], [0.9, 0.2])
    assert only_fake["roc_auc"] is None and only_fake["average_precision"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both real and fake"):
        metrics.choose_threshold([0, 0], [0.2, 0.3], "val_eer")
    # Report and plots still render.
    text = report.format_metrics(result, "single")
    assert "ROC AUC: undefined" in text and "Note: only 'real'" in text
    figures = plots.evaluation_figures([0, 0, 0], [0.1, 0.7, 0.2], result)
    assert set(figures) == set(plots.PLOT_NAMES)
    for figure in figures.values():
        plots.plt.close(figure)


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="labels but"):
        metrics.compute_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        metrics.compute_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        metrics.compute_metrics([0, 1], [0.5, float("nan")])
    with pytest.raises(ValueError, match="threshold method"):
        metrics.choose_threshold(LABELS, SCORES, "best")


def test_aggregate_scores_per_clip():
    frame_scores = [0.1, 0.3, 0.8, 0.2, 0.9]
    clips = ["a", "a", "a", "b", "b"]
    ids, mean = metrics.aggregate_scores(frame_scores, clips, "mean")
    assert ids == ["a", "b"]
    np.testing.assert_allclose(mean, [0.4, 0.55])
    np.testing.assert_allclose(metrics.aggregate_scores(frame_scores, clips, "max")[1], [0.8, 0.9])
    np.testing.assert_allclose(metrics.aggregate_scores(frame_scores, clips, "median")[1], [0.3, 0.55])
    # First-seen order, not sorted order.
    assert metrics.aggregate_scores([0.1, 0.2], ["z", "y"])[0] == ["z", "y"]
    with pytest.raises(ValueError, match="aggregate method"):
        metrics.aggregate_scores(frame_scores, clips, "sum")


def test_figures_written_as_png_and_tensorboard(tmp_path):
    result = metrics.compute_metrics(LABELS, SCORES)
    paths = plots.write_figures(plots.evaluation_figures(LABELS, SCORES, result), tmp_path / "png",
                                tensorboard_dir=tmp_path / "tb")
    assert sorted(p.name for p in paths) == sorted(f"{name}.png" for name in plots.PLOT_NAMES)
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    import tensorflow as tf
    tags = {value.tag for record in tf.compat.v1.train.summary_iterator(str(events[0]))
            for value in record.summary.value}
    assert tags == set(plots.PLOT_NAMES)


def test_report_reads_like_the_seed():
    results = {"threshold 0.5": metrics.compute_metrics(LABELS, SCORES, 0.5),
               "threshold val_eer": metrics.compute_metrics(LABELS, SCORES, 0.4)}
    text = report.format_report(results, "test", ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], LABELS, SCORES)
    for expected in ("Test Loss:", "Test Accuracy: 0.7500", "Classification Report:", "Confusion Matrix",
                     "ROC AUC: 0.7500", "Sample Predictions and True Labels:", "threshold 0.4000"):
        assert expected in text
    # Samples are shown at the chosen (last) threshold: 0.4 is called fake there.
    assert "True Label: 0, Predicted: 1  P(fake)=0.4000  b.mp4" in text
