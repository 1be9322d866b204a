"""train(config): one training run into config.run_dir (`python -m dfd.train` only parses the flags for it).

The run directory (dfd.run_layout.RunLayout) receives flags.txt (re-usable as a flagfile), a copy of
the data's metadata.json, preprocessing.json, TensorBoard logs in tb/, the best checkpoint by
validation AUC, BackupAndRestore state, model.keras, history.json and summary.json. Re-running the
same command after a crash or kill resumes from the last completed epoch; re-running a finished run
changes nothing. A run dir holding another run is refused unless --overwrite (dfd.run_state says what
"the same run" means). One trainer at a time holds the run dir (dfd.locks).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf

from dfd import atomic_files, backend, run_state, train_flags
from dfd.atomic_files import write_json
from dfd.data import integrity
from dfd.locks import folder_lock
from dfd.run_layout import RunLayout
from dfd.training import callbacks as dfd_callbacks
from dfd.training import runtime
from dfd.training.model import build_and_compile, compile_model
from dfd.training.setup import TrainingSetup

WARMUP_BACKUP = "warmup"         # backup/warmup: phase one's state, kept until the run completes
FINE_TUNE_BACKUP = "fine_tune"   # backup/fine_tune: phase two's state


def train(config: train_flags.TrainConfig, extra_callbacks: list | None = None, overwrite: bool = False) -> dict:
    """Trains `config` into config.run_dir and returns the summary (also written to summary.json).

    extra_callbacks: appended to the trainer's own (tests simulating a kill).
    overwrite: the run dir may hold another run; remove what dfd wrote there and start again.
    The chief holds the run dir's lock for the whole training: a second trainer there is refused.
    """
    run_state.check_run_dir_path(config.run_dir)
    if not runtime.is_chief():
        return _train(config, extra_callbacks, chief=False)
    setup = TrainingSetup.open(config)   # before the lock: a typo in --data leaves no empty run dir behind
    layout = RunLayout(config.run_dir)
    with folder_lock(layout.root, "training"):
        if overwrite:
            removed = run_state.start_clean(layout)
            if removed:
                print(f"dfd.train: --overwrite: removed {len(removed)} file(s)/folder(s) dfd wrote in {layout.root}")
        else:
            run_state.check_same_run(layout, config, _recorded_metadata(setup))
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
        return _train(config, extra_callbacks, chief=True, setup=setup)


def holds_another_run(config: train_flags.TrainConfig) -> bool:
    """True when config.run_dir holds a run other than `config` (which train() would refuse)."""
    return bool(run_state.differences(RunLayout(config.run_dir), config,
                                      _recorded_metadata(TrainingSetup.open(config))))


def _recorded_metadata(setup: TrainingSetup) -> dict:
    """The data's metadata.json as the run keeps it (data_metadata.json): with the folder's absolute path.

    flags.txt has --data as typed, relative to where training ran, and dfd.evaluate --run_dir must
    find the data from any working directory. With --extra_train_data, "extra_train_data" lists those
    folders (absolute path, train split, preprocessing): dfd.run_state compares them as it does --data.
    """
    recorded = {**setup.meta.raw, "directory": str(setup.meta.directory.resolve())}
    if setup.extras:
        recorded["extra_train_data"] = [
            {"directory": str(extra.directory.resolve()), "splits": {"train": extra.raw["splits"]["train"]},
             "preprocessing": extra.raw.get("preprocessing")} for extra in setup.extras]
    return recorded


def _train(config: train_flags.TrainConfig, extra_callbacks, chief: bool, setup: TrainingSetup | None = None) -> dict:
    backend.check_supported(config)   # what the torch backend cannot do: refused before any work
    # The first TensorFlow work: a multi-worker strategy must be set up before the rest.
    strategy = runtime.make_strategy(config.strategy)
    # train() has opened and checked the data already on the chief; other workers open it here.
    setup = setup or TrainingSetup.open(config)
    # Non-chief workers write their (identical) checkpoints and logs to a temporary folder that is
    # removed afterwards, as in the Keras multi-worker guide: only the chief owns the run dir.
    write_root = Path(config.run_dir) if chief else Path(tempfile.mkdtemp(prefix="dfd-worker-"))
    precision = runtime.resolve_precision(config.precision)
    try:
        with runtime.precision_policy(precision):
            runtime.seed_everything(config.seed, config.deterministic)
            return _fit(config, extra_callbacks, chief, setup, strategy, precision, RunLayout(write_root))
    finally:
        if not chief:
            shutil.rmtree(write_root, ignore_errors=True)


def _fit(config: train_flags.TrainConfig, extra_callbacks, chief: bool, setup: TrainingSetup, strategy,
         precision: str, own: RunLayout) -> dict:
    """The training itself, written to `own` (the run dir on the chief, a temporary folder on other workers)."""
    layout = RunLayout(config.run_dir)
    weights = setup.class_weights(config)   # refuses one-class data before the model is built
    with strategy.scope():
        model = build_and_compile(config, setup.input_shape, config.hparams)

    if config.strategy == "multi_worker" or strategy.num_replicas_in_sync > 1:
        # Two patches of private Keras code, version-checked (dfd.training.keras_patches). Tested
        # with two CPU workers; several GPUs in one process are untested here.
        from dfd.training import keras_patches
        keras_patches.build_from_local_batch(model, strategy)

    train_set = setup.training_data(config, model.input_shape)
    val_data, num_val = setup.validation_data(config, model.input_shape)

    if chief:
        layout.root.mkdir(parents=True, exist_ok=True)
        atomic_files.write_text(layout.flags, train_flags.flagfile_text(config))
        write_json(layout.data_metadata, _recorded_metadata(setup))
        setup.meta.preprocessing.save(layout.preprocessing)
    own.best_model.parent.mkdir(parents=True, exist_ok=True)

    completed = run_state.completed_epochs(own)
    epoch_log = dfd_callbacks.EpochLog(own.history, train_set.steps * config.batch_size, completed)
    # Shared by both phases of a warm-up run: one best checkpoint, one history, one TensorBoard log.
    # Order matters at epoch end: the backup (first in each phase's list below), then
    # history.json, then best.keras, so that a kill between any two leaves files a resume can
    # reconcile (see BestCheckpoint).
    common = [
        dfd_callbacks.RaiseOnNaN(),
        epoch_log,
        dfd_callbacks.BestCheckpoint(own.best_model, epoch_log.epochs, completed),
        keras.callbacks.TensorBoard(str(own.tensorboard),
                                    profile_batch=dfd_callbacks.profile_batch(config.profile_batch)),
    ]
    # The backup outlives fit: it is removed only once model.keras and summary.json are
    # written, so a kill in between resumes with nothing left to train instead of epoch 1.
    backup = own.backup / FINE_TUNE_BACKUP if config.warmup_epochs else own.backup
    callbacks = [keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False), *common]
    if config.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience))
    if config.reduce_lr_patience > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=config.reduce_lr_patience))
    if config.data_service:
        from dfd import data_service
        callbacks.append(data_service.stall_watchdog(config.data_service, config.data_service_timeout_s))
    callbacks += list(extra_callbacks or [])

    _print_start(config, setup, train_set, num_val, precision, strategy, completed)
    if weights:
        print(f"dfd.train: imbalanced train split {setup.meta.class_counts('train')}: class weights {weights}")
    start = time.perf_counter()
    fit = functools.partial(model.fit, train_set.dataset, steps_per_epoch=train_set.steps, validation_data=val_data,
                            class_weight=weights, verbose=config.verbose,
                            shuffle=False)   # the pipeline shuffles
    try:
        if config.warmup_epochs:
            _warm_up(model, config, strategy, fit, own, common + list(extra_callbacks or []))
            fit(epochs=config.epochs, initial_epoch=config.warmup_epochs, callbacks=callbacks)
        else:
            fit(epochs=config.epochs, callbacks=callbacks)
    except tf.errors.DataLossError as error:   # a shard failed its CRC: name it, say how to repair
        for extra in setup.extras:
            broken = integrity.find_corrupt_shards(extra, ("train",))
            if broken:
                raise integrity.corrupt_data_error(extra, ("train",), error, broken) from None
        raise integrity.corrupt_data_error(setup.meta, ("train", "val"), error) from None
    wall_seconds = time.perf_counter() - start
    dfd_callbacks.save_model_atomically(model, own.final_model)
    summary = _summary(config, epoch_log.epochs, wall_seconds, precision, train_set.num_records, num_val)
    summary["replicas"] = strategy.num_replicas_in_sync
    summary["backend"] = keras.backend.backend()
    if chief:
        write_json(layout.summary, summary)
        _print_summary(summary)
    shutil.rmtree(own.backup, ignore_errors=True)   # only now: the final files are written
    return summary


def _print_start(config, setup: TrainingSetup, train_set, num_val: int, precision: str, strategy,
                 completed: int) -> None:
    resuming = f", resuming after epoch {completed}" if completed else ""
    reading = (f"{setup.frames} random frame(s) per train clip, every frame of the val clips, as images of "
               if setup.frames else "")
    if setup.extras:   # num_records counts them too
        reading = (f"with the train split of {', '.join(config.extra_train_dirs)}: "
                   f"{train_set.num_examples} train examples per epoch, " + reading)
    print(f"dfd.train: {config.model} on {config.data} ({train_set.num_records} train / {num_val} val clips, "
          f"{reading}{setup.input_shape}), {train_set.steps} steps/epoch, precision {precision}, "
          f"{strategy.num_replicas_in_sync} replica(s), run dir {config.run_dir}{resuming}")


def _warm_up(model, config: train_flags.TrainConfig, strategy, fit, own: RunLayout, callbacks: list) -> None:
    """Phase one of --warmup_epochs: the head alone at --learning_rate; then unfreezes and recompiles.

    Resuming after a kill: phase one keeps its own backup (backup/warmup) until the whole run completes.
    Killed in phase one, the re-run restores it and finishes the warm-up; killed in phase two, the re-run
    restores the finished warm-up (fit then has no epoch left to run), and phase two's own backup
    (backup/fine_tune, holding the unfrozen model's optimizer state) restores phase two. No early stopping
    or learning-rate schedule during the warm-up: it is short and always runs in full.
    """
    from dfd.models import backbones
    with strategy.scope():
        backbones.set_backbone_trainable(model, False)
        compile_model(model, config, config.learning_rate)
    print(f"dfd.train: warm-up: epochs 1-{config.warmup_epochs} train the head only (backbone frozen) at "
          f"learning rate {config.learning_rate}")
    fit(epochs=config.warmup_epochs, callbacks=[
        keras.callbacks.BackupAndRestore(str(own.backup / WARMUP_BACKUP), delete_checkpoint=False), *callbacks])
    with strategy.scope():
        backbones.set_backbone_trainable(model, True, freeze_batch_norm=config.hparams.get("freeze_batch_norm", False))
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
