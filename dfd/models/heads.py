"""One view of both output heads: P(fake), the matching loss, and metrics computed on P(fake).

Models end either in Dense(1, sigmoid) (image_cnn, cnn_lstm) or in Dense(2, softmax) (inception_v3,
as in the seed). Labels are always integers, 0 real and 1 fake. Rather than making the trainer feed
one-hot labels to one head and integers to the other, the metrics below take either head's output,
reduce it to P(fake) and then score it, so `val_auc` means the same thing for every model.
"""

from __future__ import annotations

import keras
from keras import ops


def fake_probability(outputs):
    """P(fake), shape (B,), from a model's outputs: a numpy array or a tensor of shape (B, 1) or (B, 2)."""
    if len(outputs.shape) != 2 or outputs.shape[-1] not in (1, 2):
        raise ValueError(f"Expected model outputs of shape (B, 1) (sigmoid) or (B, 2) (softmax), "
                         f"got {tuple(outputs.shape)}.")
    # Column 0 of a sigmoid output, column 1 (the fake class) of a two-class softmax.
    column = 0 if outputs.shape[-1] == 1 else 1
    # Plain indexing works on numpy arrays and on TensorFlow/Keras tensors alike.
    return outputs[:, column]


def loss_for(model: keras.Model) -> keras.losses.Loss:
    """The loss matching the model's head, for integer labels of shape (B,)."""
    units = model.output_shape[-1]
    if units == 1:
        return keras.losses.BinaryCrossentropy()
    if units == 2:
        return keras.losses.SparseCategoricalCrossentropy()
    raise ValueError(f"Model {model.name!r} has {units} output units; dfd models have 1 (sigmoid) or 2 (softmax).")


class _OnFakeProbability:
    """Mixin before a Keras metric: integer labels as floats (B,), and either head's output as P(fake)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        return super().update_state(labels, ops.cast(fake_probability(y_pred), "float32"), sample_weight)


@keras.saving.register_keras_serializable(package="dfd")
class FakeAUC(_OnFakeProbability, keras.metrics.AUC):
    """ROC AUC of P(fake) against integer labels, for either head."""


@keras.saving.register_keras_serializable(package="dfd")
class FakePrecision(_OnFakeProbability, keras.metrics.Precision):
    """Precision of 'fake' at threshold 0.5 on P(fake), for either head."""


@keras.saving.register_keras_serializable(package="dfd")
class FakeRecall(_OnFakeProbability, keras.metrics.Recall):
    """Recall of 'fake' at threshold 0.5 on P(fake), for either head."""


@keras.saving.register_keras_serializable(package="dfd")
class FakeAccuracy(_OnFakeProbability, keras.metrics.BinaryAccuracy):
    """Accuracy of P(fake) > 0.5; for the softmax head this equals argmax accuracy."""


def metrics_for(model: keras.Model | None = None) -> list[keras.metrics.Metric]:
    """Fresh accuracy, AUC, precision and recall on P(fake); logged as accuracy/auc/precision/recall.

    The same list works for both heads, so `model` is only accepted for symmetry with loss_for.
    Fresh objects on every call: a metric instance must not be shared between two compiled models.
    """
    del model
    return [FakeAccuracy(name="accuracy"), FakeAUC(name="auc"),
            FakePrecision(name="precision"), FakeRecall(name="recall")]
