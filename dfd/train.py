"""Trains a model on a dfd TFRecord folder: `python -m dfd.train --flagfile=configs/video.flags`.

`main` only parses flags; everything happens in `train(config)`, which tests and the tuner call
directly. The run directory (dfd.run_layout.RunLayout) receives flags.txt (re-usable as a
flagfile), a copy of the data's metadata.json, preprocessing.json, TensorBoard logs in tb/, the
best checkpoint by validation AUC, BackupAndRestore state, model.keras, history.json and
summary.json. Re-running the same command after a crash or kill resumes from the last
completed epoch; re-running a finished run changes nothing. A run dir holding another run is
refused unless --overwrite (dfd.run_state says what "the same run" means). One trainer at a time
holds the run dir (dfd.locks).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from absl import flags

from dfd import backend, cli

if __name__ == "__main__":   # before dfd.models imports TensorFlow
    cli.quiet_tensorflow()

from dfd import run_state, train_flags  # noqa: E402
from dfd.data.metadata import DatasetMetadata  # noqa: E402
from dfd.atomic_files import write_json  # noqa: E402
from dfd.locks import folder_lock  # noqa: E402
from dfd.run_layout import RunLayout  # noqa: E402


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

        def __init__(self, path: Path | None, clips_per_epoch: int, completed: int = 0):
            super().__init__()
            self.path = path
            self.clips_per_epoch = clips_per_epoch
            # Only the epochs the backup holds: later ones (none, in the trainer's callback order) are re-run.
            self.epochs = [e for e in _read_history(path) if e["epoch"] <= completed] if path else []
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
                write_json(self.path, {"epochs": self.epochs})

    class BestCheckpoint(keras.callbacks.Callback):
        """ModelCheckpoint(save_best_only) on val_auc that survives a kill and a resume.

        Keras's ModelCheckpoint starts every fit at best = -inf, so the first epoch after a resume
        overwrote best.keras even when an earlier epoch was better. This one starts from the best
        val_auc in history.json and writes under a temporary name, then renames. Placed after the
        backup and EpochLog: a kill after history.json records epoch e but before best.keras is
        written leaves the backup at epoch e, so on resume it writes the restored (epoch e) weights
        when e is the best in history. best.keras then always holds summary.json's best epoch.
        """

        def __init__(self, path: Path, history: list[dict], completed: int):
            super().__init__()
            self.path = path
            scored = [e for e in history if math.isfinite(e.get("val_auc", float("nan")))]
            best = max(scored, key=lambda e: e["val_auc"]) if scored else None
            self.best = best["val_auc"] if best else float("-inf")
            self._repair = bool(best) and best["epoch"] == completed

        def on_train_begin(self, logs=None):
            if self._repair:
                self._save()

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {}).get("val_auc", float("nan")))
            if math.isfinite(value) and value > self.best:
                self.best = value
                self._save()

        def _save(self):
            _save_model_atomically(self.model, self.path)

    return RaiseOnNaN, EpochLog, BestCheckpoint


def _save_model_atomically(model, path: Path) -> None:
    # A kill mid-save must not leave a truncated .keras file where a complete one was.
    partial = RunLayout.partial(path)
    model.save(partial)
    os.replace(partial, path)


def _read_history(path: Path) -> list[dict]:
    if path and path.is_file():
        return json.loads(path.read_text()).get("epochs", [])
    return []


# --------------------------------------------------------------------------
# Devices, precision and distribution
# --------------------------------------------------------------------------

def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "mixed_float16" if backend.gpu_available() else "float32"
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
                  train_classes: str = "all", extras: list[DatasetMetadata] = (),
                  frames_per_clip: int | None = None) -> dict[int, float] | None:
    """Balanced weights n / (2 * n_class) when one class outnumbers the other by `threshold`.

    Counted as training sees them: without the fakes with train_classes="real", with the
    expected share of real clips turned into pseudo-fakes (a dfd.data.pseudo_fakes.PseudoFakes),
    and over the train splits of `meta` and the --extra_train_data folders `extras`, a video
    record counting `frames_per_clip` times when an image model reads K frames of it.
    """
    counts, num_real, num_fake = {}, 0, 0
    for source in (meta, *extras):
        source_counts = source.class_counts("train")
        times = frames_per_clip if frames_per_clip and source.preprocessing.kind == "video" else 1
        for name, count in source_counts.items():
            counts[name] = counts.get(name, 0) + count
        num_real += source_counts.get("real", 0) * times
        num_fake += source_counts.get("fake", 0) * times if train_classes == "all" else 0
    if pseudo_fakes is not None:
        num_real, num_fake = pseudo_fakes.expected_counts(num_real, num_fake)
    if min(num_real, num_fake) == 0:
        hint = ("; with --train_classes=real add --pseudo_fakes=sbi (and --pseudo_fake_fraction < 1)"
                if train_classes == "real" or pseudo_fakes is not None and pseudo_fakes.enabled else
                "; or train on real clips only with --train_classes=real --pseudo_fakes=sbi")
        where = (f"the train split of {meta.directory}" if not extras else
                 f"the train splits of {', '.join(str(source.directory) for source in (meta, *extras))}")
        raise ValueError(f"{where} has only one class ({counts}) as trained on; a detector needs real and fake "
                         f"examples{hint}")
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

    The model is wrapped behind the on-device augmentation layer when any --augment_* op (other than
    the host's --augment_jpeg) is on (dfd.models.augmentation.wrap): every model gets the same
    augmentation, which acts in training only. With --input_size=N the model is built for N×N frames
    behind a resize layer (dfd.models.resize), so the wrapped model still takes `input_shape`. Call inside the distribution strategy's scope and
    after setting the dtype policy.
    """
    from dfd import models
    from dfd.models import augmentation, resize
    model = models.build_model(config.model, resize.resized_shape(input_shape, config.input_size), **hparams)
    model = augmentation.wrap(model, train_flags.device_augment(config), seed=config.seed, input_shape=input_shape)
    compile_model(model, config, config.learning_rate)
    return model


def compile_model(model, config: train_flags.TrainConfig, learning_rate: float) -> None:
    """(Re)compiles `model` with a fresh Adam at `learning_rate`: needed again after (un)freezing layers."""
    keras = _keras()
    from dfd import models
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=models.loss_for(model),
                  metrics=models.metrics_for(model), jit_compile=config.jit_compile)


def frames_per_clip(config: train_flags.TrainConfig, spec, extra_kinds=()) -> int | None:
    """K frames per clip when an image model trains on video records (None: the data's own examples).

    An image model on video data reads frames: --frames_per_clip=K random ones per clip and epoch, 1 when
    unset (an epoch then has as many steps as with clips). Video models need video data; image data
    has one frame per record, so --frames_per_clip applies to neither (unless an --extra_train_data
    folder holds video: `extra_kinds`, see train_frames_per_clip).
    """
    from dfd import models
    kind = models.model_kind(config.model)
    if kind == "image" and spec.kind == "video":
        return config.frames_per_clip or 1
    if kind != spec.kind:
        raise ValueError(f"--model={config.model} is a {kind} model but {config.data} holds {spec.kind} "
                         f"records; use a {kind} dataset or a {spec.kind} model")
    if config.frames_per_clip and not (kind == "image" and "video" in extra_kinds):
        raise ValueError(f"--frames_per_clip applies to an image model on video records; --model={config.model} "
                         f"on {spec.kind} records reads whole {'clips' if kind == 'video' else 'images'}: "
                         "leave it unset")
    return None


def train_frames_per_clip(config: train_flags.TrainConfig, spec, extras: list[DatasetMetadata]) -> int | None:
    """The frames_per_clip of dfd.data.pipeline.make_training_data: K for an image model (video records of
    --data or of --extra_train_data give K frames each, image records one), None for a video model."""
    from dfd import models
    frames = frames_per_clip(config, spec, [extra.preprocessing.kind for extra in extras])
    if frames is None and extras and models.model_kind(config.model) == "image":
        return config.frames_per_clip or 1
    return frames


def extra_train_data(config: train_flags.TrainConfig, meta: DatasetMetadata) -> list[DatasetMetadata]:
    """The --extra_train_data folders' metadata, checked to join --data's training set (clear errors)."""
    from dfd import models
    from dfd.data import pipeline

    extras = [DatasetMetadata.load(pipeline.checked_dir(directory)) for directory in config.extra_train_dirs]
    for extra in extras:
        extra.shard_paths("train")   # a ValueError naming the folder when it has no train split
    pipeline.check_extra_data(meta, extras, frames=models.model_kind(config.model) == "image")
    return extras


def train(config: train_flags.TrainConfig, extra_callbacks: list | None = None, overwrite: bool = False) -> dict:
    """Trains `config` into config.run_dir and returns the summary (also written to summary.json).

    extra_callbacks: appended to the trainer's own (the tuner's, or tests simulating a kill).
    overwrite: the run dir may hold another run; remove what dfd wrote there and start again.
    The chief holds the run dir's lock for the whole training: a second trainer there is refused.
    """
    run_state.check_run_dir_path(config.run_dir)
    if not is_chief():
        return _train(config, extra_callbacks, chief=False)
    meta = _checked_data(config)   # before the lock: a typo in --data leaves no empty run dir behind
    extras = extra_train_data(config, meta)
    layout = RunLayout(config.run_dir)
    with folder_lock(layout.root, "training"):
        if overwrite:
            removed = run_state.start_clean(layout)
            if removed:
                print(f"dfd.train: --overwrite: removed {len(removed)} file(s)/folder(s) dfd wrote in {layout.root}")
        else:
            run_state.check_same_run(layout, config, _recorded_metadata(meta, extras))
            finished = run_state.finished_summary(layout)
            if finished is not None:
                if finished.get("epochs_requested", config.epochs) != config.epochs:
                    raise ValueError(
                        f"{layout.root} holds a finished run of --epochs={finished.get('epochs_requested')}; a "
                        f"finished run is not extended. Use another --run_dir, or --overwrite to train it again")
                shutil.rmtree(layout.backup, ignore_errors=True)   # killed after summary.json, before cleanup
                print(f"dfd.train: {layout.root} already holds this finished run (best epoch "
                      f"{finished.get('best_epoch')} of {finished.get('epochs_run')}); nothing to do. "
                      "--overwrite trains it again")
                return finished
        return _train(config, extra_callbacks, chief=True, meta=meta, extras=extras)


def holds_another_run(config: train_flags.TrainConfig) -> bool:
    """True when config.run_dir holds a run other than `config` (which train() would refuse)."""
    meta = _checked_data(config)
    return bool(run_state.differences(RunLayout(config.run_dir), config,
                                      _recorded_metadata(meta, extra_train_data(config, meta))))


def _recorded_metadata(meta: DatasetMetadata, extras: list[DatasetMetadata] = ()) -> dict:
    """The data's metadata.json as the run keeps it (data_metadata.json): with the folder's absolute path.

    flags.txt has --data as typed, relative to where training ran, and dfd.evaluate --run_dir must
    find the data from any working directory. With --extra_train_data, "extra_train_data" lists those
    folders (absolute path, train split, preprocessing): dfd.run_state compares them as it does --data.
    """
    recorded = {**meta.raw, "directory": str(meta.directory.resolve())}
    if extras:
        recorded["extra_train_data"] = [
            {"directory": str(extra.directory.resolve()), "splits": {"train": extra.raw["splits"]["train"]},
             "preprocessing": extra.raw.get("preprocessing")} for extra in extras]
    return recorded


def _checked_data(config: train_flags.TrainConfig) -> DatasetMetadata:
    """The data's metadata, checked to suit config.model (a clear error, not a traceback later)."""
    from dfd.data import pipeline

    meta = DatasetMetadata.load(pipeline.checked_dir(config.data))
    extra_kinds = [DatasetMetadata.load(pipeline.checked_dir(directory)).preprocessing.kind
                   for directory in config.extra_train_dirs]
    frames_per_clip(config, meta.preprocessing, extra_kinds)   # refuses a model that cannot read these records
    return meta


def _train(config: train_flags.TrainConfig, extra_callbacks, chief: bool,
           meta: DatasetMetadata | None = None, extras: list[DatasetMetadata] | None = None) -> dict:
    backend.check_supported(config)   # what the torch backend cannot do: refused before any work
    strategy = make_strategy(config.strategy)   # first TensorFlow work: multi-worker setup must precede the rest
    keras = _keras()
    import tensorflow as tf

    from dfd.data import integrity, pipeline

    layout = RunLayout(config.run_dir)
    # Non-chief workers write their (identical) checkpoints and logs to a temporary folder that is
    # removed afterwards, as in the Keras multi-worker guide: only the chief owns the run dir.
    write_root = Path(config.run_dir) if chief else Path(tempfile.mkdtemp(prefix="dfd-worker-"))
    own = RunLayout(write_root)

    meta = meta or _checked_data(config)
    # train() has opened and checked them already on the chief; other workers open them here.
    extras = extra_train_data(config, meta) if extras is None else extras
    spec = meta.preprocessing
    frames = frames_per_clip(config, spec, [extra.preprocessing.kind for extra in extras])   # --data's and validation's
    train_frames = train_frames_per_clip(config, spec, extras)
    input_shape = pipeline.output_shape(config.data, frames=frames is not None)
    weights = class_weights(meta, config.class_weight_threshold, config.pseudo_fake_spec, config.train_classes,
                            extras, train_frames)

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

        # The training set repeats and fit counts steps: every worker of a multi-worker run then
        # takes the same number of steps, whatever its share of the shards.
        # With --extra_train_data the train split of every folder, mixed in proportion to its size.
        train_data, num_train, num_train_examples = pipeline.make_training_data(
            [config.data, *config.extra_train_dirs], batch_size=config.batch_size, cache=config.cache,
            augment=train_flags.host_augment(config), frames_per_clip=train_frames,
            deterministic=config.deterministic, seed=config.seed,
            expected_shape=model.input_shape, shuffle_buffer=config.shuffle_buffer, repeat=True,
            pseudo_fakes=config.pseudo_fake_spec, classes=config.train_classes, data_service=config.data_service)
        val_data, num_val = pipeline.make_dataset(
            config.data, "val", batch_size=config.batch_size, training=False,
            cache=config.cache, expected_shape=model.input_shape,
            # Frame-level validation on every frame of each val clip: deterministic, so val_auc (which
            # picks the best epoch) does not move with the frames drawn, and the same frame-level ROC
            # AUC that dfd.evaluate reports; it costs one inference per stored frame.
            frames_per_clip=None if frames is None else "all",
            # Every worker evaluates the whole validation split: shards of unequal size would give
            # workers unequal step counts and hang the all-reduce; the metrics come out the same.
            shard_files=config.strategy != "multi_worker")
        # With frames_per_clip=K an epoch shows every clip once as K frames (and every image once).
        steps = pipeline.steps_per_epoch(num_train_examples, config.batch_size, training=True)

        if chief:
            layout.root.mkdir(parents=True, exist_ok=True)
            layout.flags.write_text(train_flags.flagfile_text(config))
            layout.data_metadata.write_text(json.dumps(_recorded_metadata(meta, extras), indent=2) + "\n")
            spec.save(layout.preprocessing)
        own.best_model.parent.mkdir(parents=True, exist_ok=True)

        completed = run_state.completed_epochs(own)
        RaiseOnNaN, EpochLog, BestCheckpoint = _make_callbacks_module()
        epoch_log = EpochLog(own.history, steps * config.batch_size, completed)
        # Shared by both phases of a warm-up run: one best checkpoint, one history, one TensorBoard log.
        # Order matters at epoch end: the backup (first in each phase's list below), then
        # history.json, then best.keras, so that a kill between any two leaves files a resume can
        # reconcile (see BestCheckpoint).
        common = [
            RaiseOnNaN(),
            epoch_log,
            BestCheckpoint(own.best_model, epoch_log.epochs, completed),
            keras.callbacks.TensorBoard(str(own.tensorboard), profile_batch=_profile_batch(config.profile_batch)),
        ]
        # The backup outlives fit: it is removed only once model.keras and summary.json are
        # written, so a kill in between resumes with nothing left to train instead of epoch 1.
        backup = own.backup / FINE_TUNE_BACKUP if config.warmup_epochs else own.backup
        callbacks = [keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False), *common]
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

        resuming = f", resuming after epoch {completed}" if completed else ""
        reading = (f"{frames} random frame(s) per train clip, every frame of the val clips, as images of "
                   if frames else "")
        if extras:   # num_train counts them too
            reading = (f"with the train split of {', '.join(config.extra_train_dirs)}: "
                       f"{num_train_examples} train examples per epoch, " + reading)
        print(f"dfd.train: {config.model} on {config.data} ({num_train} train / {num_val} val clips, "
              f"{reading}{input_shape}), {steps} steps/epoch, precision {precision}, "
              f"{strategy.num_replicas_in_sync} replica(s), run dir {config.run_dir}{resuming}")
        if weights:
            print(f"dfd.train: imbalanced train split {meta.class_counts('train')}: class weights {weights}")
        start = time.perf_counter()
        fit = functools.partial(model.fit, train_data, steps_per_epoch=steps, validation_data=val_data,
                                class_weight=weights, verbose=config.verbose,
                                shuffle=False)   # the pipeline shuffles
        try:
            if config.warmup_epochs:
                _warm_up(model, config, strategy, fit, own, common + list(extra_callbacks or []))
                fit(epochs=config.epochs, initial_epoch=config.warmup_epochs, callbacks=callbacks)
            else:
                fit(epochs=config.epochs, callbacks=callbacks)
        except tf.errors.DataLossError as error:   # a shard failed its CRC: name it, say how to repair
            for extra in extras:
                if integrity.find_corrupt_shards(extra, ("train",)):
                    raise integrity.corrupt_data_error(extra, ("train",), error) from None
            raise integrity.corrupt_data_error(meta, ("train", "val"), error) from None
        wall_seconds = time.perf_counter() - start
        _save_model_atomically(model, own.final_model)
        summary = _summary(config, epoch_log.epochs, wall_seconds, precision, num_train, num_val)
        summary["replicas"] = strategy.num_replicas_in_sync
        summary["backend"] = keras.backend.backend()
        if chief:
            write_json(layout.summary, summary)
            _print_summary(summary)
        shutil.rmtree(own.backup, ignore_errors=True)   # only now: the final files are written
        return summary
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief:
            shutil.rmtree(write_root, ignore_errors=True)


WARMUP_BACKUP = "warmup"         # backup/warmup: phase one's state, kept until the run completes
FINE_TUNE_BACKUP = "fine_tune"   # backup/fine_tune: phase two's state


def _warm_up(model, config: train_flags.TrainConfig, strategy, fit, own: RunLayout, callbacks: list) -> None:
    """Phase one of --warmup_epochs: the head alone at --learning_rate; then unfreezes and recompiles.

    Resuming after a kill: phase one keeps its own backup (backup/warmup) until the whole run completes.
    Killed in phase one, the re-run restores it and finishes the warm-up; killed in phase two, the re-run
    restores the finished warm-up (fit then has no epoch left to run), and phase two's own backup
    (backup/fine_tune, holding the unfrozen model's optimizer state) restores phase two. No early stopping
    or learning-rate schedule during the warm-up: it is short and always runs in full.
    """
    from dfd.models import backbones
    keras = _keras()
    with strategy.scope():
        backbones.set_backbone_trainable(model, False)
        compile_model(model, config, config.learning_rate)
    print(f"dfd.train: warm-up: epochs 1-{config.warmup_epochs} train the head only (backbone frozen) at "
          f"learning rate {config.learning_rate}")
    fit(epochs=config.warmup_epochs, callbacks=[
        keras.callbacks.BackupAndRestore(str(own.backup / WARMUP_BACKUP), delete_checkpoint=False), *callbacks])
    with strategy.scope():
        backbones.set_backbone_trainable(model, True)
        compile_model(model, config, config.fine_tune_rate)
    # BackupAndRestore restores the epoch through this attribute and Keras never clears it; left set by
    # phase one it would override phase two's initial_epoch (phase two's own backup sets it again).
    model._initial_epoch = None
    print(f"dfd.train: fine-tuning: epochs {config.warmup_epochs + 1}-{config.epochs} train everything at "
          f"learning rate {config.fine_tune_rate}")


def _summary(config, epochs: list[dict], wall_seconds, precision, num_train, num_val) -> dict:
    best = max(epochs, key=lambda e: e.get("val_auc", float("-inf"))) if epochs else {}
    speeds = [e["train_clips_per_second"] for e in epochs]
    # The first epoch pays for tracing and compiling; leave it out when there are others.
    steady = speeds[1:] or speeds
    return {
        "model": config.model,
        "data": str(config.data),
        "precision": precision,
        "epochs_requested": config.epochs,
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
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    config = train_flags.config_from_flags(flags.FLAGS)   # a ValueError names the bad flag value
    train(config, overwrite=flags.FLAGS.overwrite)


if __name__ == "__main__":
    train_flags.define_all_flags()
    train_flags.define_overwrite_flag()
    backend.define_backend_flag()
    cli.run(main, "dfd.train")
