"""Keras callbacks the tests share (kill and resume tests in tests/test_train.py and test_hostile_runs.py)."""

from __future__ import annotations

import keras


class EpochRecorder(keras.callbacks.Callback):
    """Records the (0-based) epochs fit starts: shows where a resumed run picked up."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
