"""The model of a TrainConfig, built and compiled as the trainer does it (dfd.train and every dfd.tune trial)."""

from __future__ import annotations

import keras

from dfd import models, train_flags
from dfd.models import augmentation, resize


def build_and_compile(config: train_flags.TrainConfig, input_shape: tuple, hparams: dict):
    """The model of `config` compiled as the trainer compiles it (the tuner's build_model(hp) calls this).

    The model is wrapped behind the on-device augmentation layer when any --augment_* op (other than
    the host's --augment_jpeg) is on (dfd.models.augmentation.wrap): every model gets the same
    augmentation, which acts in training only. With --input_size=N the model is built for N×N frames
    behind a resize layer (dfd.models.resize), so the wrapped model still takes `input_shape`. Call
    inside the distribution strategy's scope and the dtype policy (dfd.training.runtime.precision_policy).
    """
    model = models.build_model(config.model, resize.resized_shape(input_shape, config.input_size), **hparams)
    model = augmentation.wrap(model, train_flags.device_augment(config), seed=config.seed, input_shape=input_shape)
    compile_model(model, config, config.learning_rate)
    return model


def compile_model(model, config: train_flags.TrainConfig, learning_rate: float) -> None:
    """(Re)compiles `model` with a fresh Adam at `learning_rate`: needed again after (un)freezing layers."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=models.loss_for(model),
                  metrics=models.metrics_for(model), jit_compile=config.jit_compile)
