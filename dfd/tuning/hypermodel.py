"""The keras-tuner HyperModel: the search space (search_space.py) built by the trainer's own builder.

build(hp) calls dfd.training.model.build_and_compile with the trial's TrainConfig
(search_space.define_trial), so a trial's model is compiled exactly as dfd.train compiles it (same
loss, metrics, optimizer, jit setting, augmentation and resize layers); fit passes **kwargs through so
the tuner's callbacks (checkpointing, EarlyStopping, TensorBoard) arrive, and returns the best epoch's
metrics with the train-validation gaps and parameter counts. When the pseudo-fake fraction is searched, fit trains on
the trial's own training set (training_sets: its fraction's input pipeline, class weights and steps).
"""

from __future__ import annotations

import math

import keras
import keras_tuner

from dfd.train_flags import TrainConfig
from dfd.training import model as training_model
from dfd.training import runtime
from dfd.tuning.objectives import best_index
from dfd.tuning.search_space import Recipe, define_trial


def best_epoch_metrics(history: keras.callbacks.History, model: keras.Model, objective: str) -> dict:
    """The metrics of the best epoch by `objective` (val_auc: highest, val_loss: lowest), plus

    auc_gap = train AUC - val AUC and loss_gap = val loss - train loss at that epoch (positive when the
    model does better on what it trained on: overfitting), params / trainable_params, best_epoch and
    epochs (both counted from 1, over the whole model's training, resumed Hyperband rounds included).
    Train metrics are Keras's running means over the epoch, with dropout and augmentation on.
    """
    logs = history.history
    losses = logs.get("loss", [])
    if not losses or not all(math.isfinite(value) for value in losses):
        raise keras_tuner.errors.FailedTrialError(
            f"the training loss became {losses[-1] if losses else 'unavailable'}: this learning rate or "
            "architecture diverges (the trial is marked failed and the search goes on)")
    values = logs[objective]
    index = best_index(values, objective)
    at = {name: float(series[index]) for name, series in logs.items()}
    return {
        "val_auc": at["val_auc"],
        "val_loss": at["val_loss"],
        "auc": at["auc"],
        "loss": at["loss"],
        "auc_gap": at["auc"] - at["val_auc"],
        "loss_gap": at["val_loss"] - at["loss"],
        "params": float(model.count_params()),
        "trainable_params": float(sum(math.prod(weight.shape) for weight in model.trainable_weights)),
        "best_epoch": float(history.epoch[index] + 1),
        "epochs": float(history.epoch[-1] + 1),
    }


class DfdHyperModel(keras_tuner.HyperModel):
    """config: the trainer's settings (model, pinned hparams, jit...); its hparams are pinned, not searched.

    recipe: what else is searched (search_space.Recipe; None: nothing else). training_sets: config -> (train
    dataset, steps per epoch, class weights) for the trial's pseudo-fake fraction; needed when the recipe searches it.
    """

    def __init__(self, config: TrainConfig, input_shape: tuple, precision: str, objective: str,
                 recipe: Recipe | None = None, training_sets=None):
        super().__init__(name=config.model, tunable=True)
        recipe = Recipe() if recipe is None else recipe
        if recipe.pseudo_fake_fractions and training_sets is None:
            raise ValueError("searching the pseudo-fake fraction needs training_sets (one dataset per fraction)")
        self.config = config
        self.input_shape = tuple(input_shape)
        self.precision = precision
        self.objective = objective
        self.recipe = recipe
        self.training_sets = training_sets
        self.builds = 0   # models built (tests check that a resumed search builds none for finished trials)

    def declare_hyperparameters(self, hp) -> None:
        define_trial(hp, self.config, self.input_shape, self.recipe)

    def trial_config(self, hp) -> TrainConfig:
        """The TrainConfig of the trial `hp` holds: the trainer's settings with its model, hparams, learning
        rate and recipe values (input size, augmentation strengths, pseudo-fake fraction)."""
        return define_trial(hp, self.config, self.input_shape, self.recipe)

    def build(self, hp) -> keras.Model:
        # keras-tuner's Tuner._try_build calls keras.backend.clear_session() and gc.collect() before
        # every build, which keeps memory flat across trials; the dtype policy lives in that session,
        # so every build sets it (and restores it: the model keeps the policy it was built with).
        config = self.trial_config(hp)
        self.builds += 1
        with runtime.precision_policy(self.precision):
            return training_model.build_and_compile(config, self.input_shape, config.hparams)

    def fit(self, hp, model, *args, **kwargs) -> dict:
        if self.recipe.pseudo_fake_fractions:
            # The fraction lives in the input pipeline, not in the model: swap in the trial's training set
            # (and its class weights, which count the expected pseudo-fakes) for the one tuner.search got.
            train_data, steps, weights = self.training_sets(self.trial_config(hp))
            args = (train_data, *args[1:]) if args else args
            if not args:
                kwargs["x"] = train_data
            kwargs.update(steps_per_epoch=steps, class_weight=weights)
        history = model.fit(*args, **kwargs)
        return best_epoch_metrics(history, model, self.objective)
