"""Trains a model on a dfd TFRecord folder: `python -m dfd.train --flagfile=configs/video.flags`.

`main` only parses flags; everything happens in `train(config)`, which tests and the tuner call
directly. The run directory (dfd.run_layout.RunLayout) receives flags.txt (re-usable as a
flagfile), a copy of the data's metadata.json, preprocessing.json, TensorBoard logs in tb/, the
best checkpoint by validation AUC, BackupAndRestore state, model.keras, history.json and
summary.json. Re-running the same command after a crash or kill resumes from the last
completed epoch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from absl import app, flags

from dfd import train_flags
from dfd.data.metadata import DatasetMetadata
from dfd.run_layout import RunLayout


class NaNLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its backup/ was kept for inspection."""


def _keras():
    # Imported late: `python -m dfd.train --help` should not wait for TensorFlow.
    import keras
    return keras


# --------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------

def _make_callbacks_module():
    keras = _keras()

    class RaiseOnNaN(keras.callbacks.Callback):
        """Like keras.callbacks.TerminateOnNaN, but raises: a NaN run must not look like a finished one.

        Raising inside fit skips on_train_end, so BackupAndRestore keeps the last good epoch's state.
        """

        def __init__(self):
            super().__init__()
            self._epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise NaNLossError(
                    f"loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}. The backup of "
                    "the last completed epoch is kept; lower --learning_rate or try --precision=float32, "
                    "then re-run the same command to resume.")

    class EpochLog(keras.callbacks.Callback):
        """Writes history.json after every epoch, keeping earlier epochs of a resumed run.

        Keras's History only knows the epochs of the current fit call; after a resume the file still
        holds the full run. Also measures training clips/s (validation time excluded).
        """

        def __init__(self, path: Path | None, clips_per_epoch: int):
            super().__init__()
            self.path = path
            self.clips_per_epoch = clips_per_epoch
            self.epochs = _read_history(path) if path else []
            self._start = None
            self._train_seconds = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            self._train_seconds = None

        def on_test_begin(self, logs=None):
            if self._start is not None and self._train_seconds is None:
                self._train_seconds = time.perf_counter() - self._start

        def on_epoch_end(self, epoch, logs=None):
            train_seconds = self._train_seconds or (time.perf_counter() - self._start)
            entry = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                     "train_seconds": train_seconds,
                     "train_clips_per_second": self.clips_per_epoch / train_seconds}
            self.epochs = [e for e in self.epochs if e["epoch"] < epoch + 1] + [entry]
            if self.path:
                _write_json(self.path, {"epochs": self.epochs})

    return RaiseOnNaN, EpochLog


def _read_history(path: Path) -> list[dict]:
    if path and path.is_file():
        return json.loads(path.read_text()).get("epochs", [])
    return []


def _write_json(path: Path, value) -> None:
    # Write then rename so a kill mid-write never leaves a truncated file behind.
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(temporary, path)


# --------------------------------------------------------------------------
# Devices, precision and distribution
# --------------------------------------------------------------------------

def resolve_precision(precision: str) -> str:
    import tensorflow as tf
    if precision == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return precision


def make_strategy(name: str):
    """The tf.distribute strategy for --strategy; create it before any other TensorFlow work."""
    import tensorflow as tf
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster and task of this worker); see the tf.distribute multi-worker guide")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.get_strategy()   # the default strategy: one device, no overhead


def is_chief() -> bool:
    """True unless TF_CONFIG names this process as a non-chief worker (the Keras multi-worker rule)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in config.get("cluster", {})


def class_weights(meta: DatasetMetadata, threshold: float, pseudo_fakes=None,
                  train_classes: str = "all") -> dict[int, float] | None:
    """Balanced weights n / (2 * n_class) when one class outnumbers the other by `threshold`.

    Counted as training sees them: without the fakes with train_classes="real", and with the
    expected share of real clips turned into pseudo-fakes (a dfd.data.pseudo_fakes.PseudoFakes).
    """
    counts = meta.class_counts("train")
    num_real, num_fake = counts.get("real", 0), counts.get("fake", 0) if train_classes == "all" else 0
    if pseudo_fakes is not None:
        num_real, num_fake = pseudo_fakes.expected_counts(num_real, num_fake)
    if min(num_real, num_fake) == 0:
        hint = ("; with --train_classes=real add --pseudo_fakes=sbi (and --pseudo_fake_fraction < 1)"
                if train_classes == "real" or pseudo_fakes is not None and pseudo_fakes.enabled else
                "; or train on real clips only with --train_classes=real --pseudo_fakes=sbi")
        raise ValueError(f"the train split of {meta.directory} has only one class ({counts}) as trained "
                         f"on; a detector needs real and fake examples{hint}")
    if max(num_real, num_fake) / min(num_real, num_fake) < threshold:
        return None
    total = num_real + num_fake
    return {0: total / (2 * num_real), 1: total / (2 * num_fake)}


def _profile_batch(value: str):
    value = str(value).strip()
    if value in ("", "0"):
        return 0
    parts = [int(part) for part in value.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------

def build_and_compile(config: train_flags.TrainConfig, input_shape: tuple, hparams: dict):
    """The model of `config` compiled as the trainer compiles it (the tuner's build_model(hp) calls this).

    Call inside the distribution strategy's scope and after setting the dtype policy.
    """
    keras = _keras()
    from dfd import models
    model = models.build_model(config.model, input_shape, **hparams)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=models.loss_for(model),
                  metrics=models.metrics_for(model), jit_compile=config.jit_compile)
    return model


def train(config: train_flags.TrainConfig, extra_callbacks: list | None = None) -> dict:
    """Trains `config` into config.run_dir and returns the summary (also written to summary.json).

    extra_callbacks: appended to the trainer's own (the tuner's, or tests simulating a kill).
    """
    strategy = make_strategy(config.strategy)   # first: multi-worker setup must precede other TF work
    keras = _keras()
    import tensorflow as tf

    from dfd import models
    from dfd.data import integrity, pipeline

    chief = is_chief()
    layout = RunLayout(config.run_dir)
    # Non-chief workers write their (identical) checkpoints and logs to a temporary folder that is
    # removed afterwards, as in the Keras multi-worker guide: only the chief owns the run dir.
    write_root = Path(config.run_dir) if chief else Path(tempfile.mkdtemp(prefix="dfd-worker-"))
    own = RunLayout(write_root)

    meta = DatasetMetadata.load(pipeline._checked_dir(config.data))
    spec = meta.preprocessing
    kind = models.model_kind(config.model)
    if kind != spec.kind:
        raise ValueError(f"--model={config.model} is a {kind} model but {config.data} holds {spec.kind} "
                         f"records; use a {kind} dataset or a {spec.kind} model")
    input_shape = pipeline.output_shape(config.data)
    weights = class_weights(meta, config.class_weight_threshold, config.pseudo_fake_spec, config.train_classes)

    precision = resolve_precision(config.precision)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        with strategy.scope():
            model = build_and_compile(config, input_shape, config.hparams)

        if config.strategy == "multi_worker" or strategy.num_replicas_in_sync > 1:
            # Two patches of private Keras code, version-checked (dfd.training.keras_patches). Tested
            # with two CPU workers; several GPUs in one process are untested here.
            from dfd.training import keras_patches
            keras_patches.build_from_local_batch(model, strategy)

        augment = pipeline.Augment(flip=config.augment_flip, brightness=config.augment_brightness,
                                   contrast=config.augment_contrast)
        # The training set repeats and fit counts steps: every worker of a multi-worker run then
        # takes the same number of steps, whatever its share of the shards.
        train_data, num_train = pipeline.make_dataset(
            config.data, "train", batch_size=config.batch_size, training=True, cache=config.cache,
            augment=augment, deterministic=config.deterministic, seed=config.seed,
            expected_shape=model.input_shape, shuffle_buffer=config.shuffle_buffer, repeat=True,
            pseudo_fakes=config.pseudo_fake_spec, classes=config.train_classes, data_service=config.data_service)
        val_data, num_val = pipeline.make_dataset(
            config.data, "val", batch_size=config.batch_size, training=False,
            cache=config.cache, expected_shape=model.input_shape,
            # Every worker evaluates the whole validation split: shards of unequal size would give
            # workers unequal step counts and hang the all-reduce; the metrics come out the same.
            shard_files=config.strategy != "multi_worker")
        steps = pipeline.steps_per_epoch(num_train, config.batch_size, training=True)

        if chief:
            layout.root.mkdir(parents=True, exist_ok=True)
            layout.flags.write_text(train_flags.flagfile_text(config))
            # The data folder, absolute: flags.txt has --data as typed, relative to where training
            # ran, and dfd.evaluate --run_dir must find the data from any working directory.
            copied = {**json.loads((meta.directory / "metadata.json").read_text()),
                      "directory": str(meta.directory.resolve())}
            layout.data_metadata.write_text(json.dumps(copied, indent=2) + "\n")
            spec.save(layout.preprocessing)
        own.best_model.parent.mkdir(parents=True, exist_ok=True)

        RaiseOnNaN, EpochLog = _make_callbacks_module()
        epoch_log = EpochLog(own.history, steps * config.batch_size)
        callbacks = [
            RaiseOnNaN(),
            keras.callbacks.BackupAndRestore(str(own.backup)),
            keras.callbacks.ModelCheckpoint(str(own.best_model), monitor="val_auc", mode="max",
                                            save_best_only=True),
            keras.callbacks.TensorBoard(str(own.tensorboard), profile_batch=_profile_batch(config.profile_batch)),
            epoch_log,
        ]
        if config.patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_auc", mode="max",
                                                           patience=config.patience))
        if config.reduce_lr_patience > 0:
            callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss",
                                                               patience=config.reduce_lr_patience))
        if config.data_service:
            from dfd import data_service
            callbacks.append(data_service.stall_watchdog(config.data_service, config.data_service_timeout_s))
        callbacks += list(extra_callbacks or [])

        print(f"dfd.train: {config.model} on {config.data} ({num_train} train / {num_val} val clips of "
              f"{input_shape}), {steps} steps/epoch, precision {precision}, "
              f"{strategy.num_replicas_in_sync} replica(s), run dir {config.run_dir}")
        if weights:
            print(f"dfd.train: imbalanced train split {meta.class_counts('train')}: class weights {weights}")
        start = time.perf_counter()
        try:
            model.fit(train_data, epochs=config.epochs, steps_per_epoch=steps, validation_data=val_data,
                      callbacks=callbacks, class_weight=weights, verbose=config.verbose,
                      shuffle=False)   # the pipeline shuffles
        except tf.errors.DataLossError as error:   # a shard failed its CRC: name it, say how to repair
            raise integrity.corrupt_data_error(meta, ("train", "val"), error) from None
        wall_seconds = time.perf_counter() - start
        model.save(own.final_model)
        summary = _summary(config, epoch_log.epochs, wall_seconds, precision, num_train, num_val)
        summary["replicas"] = strategy.num_replicas_in_sync
        if chief:
            _write_json(layout.summary, summary)
            _print_summary(summary)
        return summary
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:
            shutil.rmtree(write_root, ignore_errors=True)


def _summary(config, epochs: list[dict], wall_seconds, precision, num_train, num_val) -> dict:
    best = max(epochs, key=lambda e: e.get("val_auc", float("-inf"))) if epochs else {}
    speeds = [e["train_clips_per_second"] for e in epochs]
    # The first epoch pays for tracing and compiling; leave it out when there are others.
    steady = speeds[1:] or speeds
    return {
        "model": config.model,
        "data": str(config.data),
        "precision": precision,
        "epochs_run": len(epochs),
        "best_epoch": best.get("epoch"),
        "best_val": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
        "last_epoch": epochs[-1] if epochs else {},
        "num_train": num_train,
        "num_val": num_val,
        "wall_seconds": wall_seconds,
        "train_clips_per_second": sum(steady) / len(steady) if steady else None,
    }


def _print_summary(summary: dict) -> None:
    best = summary["best_val"]
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(best.items()))
    speed = summary["train_clips_per_second"]
    print(f"dfd.train: best epoch {summary['best_epoch']} of {summary['epochs_run']} (by val AUC): {metrics}")
    print(f"dfd.train: {summary['wall_seconds']:.1f} s this session, "
          f"{speed:.1f} training clips/s" if speed else "")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    try:
        config = train_flags.config_from_flags(flags.FLAGS)
    except ValueError as error:   # bad flag values: say what to fix, without a traceback
        raise app.UsageError(str(error)) from None
    train(config)


if __name__ == "__main__":
    train_flags.define_all_flags()
    app.run(main)
