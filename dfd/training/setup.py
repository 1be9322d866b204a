"""What a training prepares before fit, once for dfd.train and dfd.tune: the data, its datasets, class weights.

    setup = TrainingSetup.open(config)    # metadata.json of --data and --extra_train_data read once, checked
    train_set = setup.training_data(config, expected_shape)    # repeating dataset, records, examples, steps
    val_data, num_val = setup.validation_data(config, expected_shape)
    weights = setup.class_weights(config)

Every check raises a ValueError that says what to do, before any run dir or tuner project is written.
A tuner's trials share one setup: they change the model within its kind, the frame size (a layer of
the model), the augmentation and the pseudo-fake fraction, never the data.
"""

from __future__ import annotations

import dataclasses

from dfd import models, train_flags
from dfd.data import pipeline
from dfd.data.metadata import DatasetMetadata


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The repeating training set: fit counts `steps` per epoch (every worker takes as many)."""
    dataset: object          # tf.data.Dataset of (uint8 batch, labels)
    num_records: int         # clips and images read per epoch
    num_examples: int        # examples per epoch: frames for an image model reading video records
    steps: int               # steps per epoch


@dataclasses.dataclass(frozen=True)
class TrainingSetup:
    """--data's and the --extra_train_data folders' metadata, checked to suit config.model.

    frames: frames per clip of --data and of validation (None: whole examples; see frames_per_clip);
    train_frames: the training set's (see train_frames_per_clip); input_shape: one example as the
    pipeline emits it, the model's input.
    """
    meta: DatasetMetadata
    extras: list[DatasetMetadata]
    frames: int | None
    train_frames: int | None
    input_shape: tuple

    @classmethod
    def open(cls, config: train_flags.TrainConfig) -> "TrainingSetup":
        meta = pipeline.open_dataset(config.data)
        extras = [pipeline.open_dataset(directory) for directory in config.extra_train_dirs]
        # Refuses a model that cannot read these records, first: the clearest error when several apply.
        frames = frames_per_clip(config, meta.preprocessing, [extra.preprocessing.kind for extra in extras])
        for extra in extras:
            extra.shard_paths("train")   # a ValueError naming the folder when it has no train split
        pipeline.check_extra_data(meta, extras, frames=models.model_kind(config.model) == "image")
        return cls(meta, extras, frames, train_frames_per_clip(config, frames, extras),
                   pipeline.output_shape(meta, frames=frames is not None))

    def training_data(self, config: train_flags.TrainConfig, expected_shape) -> TrainingData:
        """The train split of --data (with --extra_train_data: of every folder, mixed in proportion to its size).

        It repeats and fit counts steps: every worker of a multi-worker run then takes the same number
        of steps, whatever its share of the shards. With frames_per_clip=K an epoch shows every clip
        once as K frames (and every image once).
        """
        dataset, num_records, num_examples = pipeline.make_train_dataset(
            self.meta, extras=self.extras, batch_size=config.batch_size, cache=config.cache,
            augment=config.augment, frames_per_clip=self.train_frames,
            deterministic=config.deterministic, seed=config.seed, expected_shape=expected_shape,
            shuffle_buffer=config.shuffle_buffer, repeat=True, pseudo_fakes=config.pseudo_fake_spec,
            classes=config.train_classes, data_service=config.data_service)
        steps = pipeline.steps_per_epoch(config.examples_per_epoch or num_examples, config.batch_size, training=True)
        return TrainingData(dataset, num_records, num_examples, steps)

    def validation_data(self, config: train_flags.TrainConfig, expected_shape) -> tuple:
        """(dataset, clips) of --data's val split."""
        return pipeline.make_eval_dataset(
            self.meta, "val", batch_size=config.batch_size,
            cache=config.cache, expected_shape=expected_shape,
            # Frame-level validation on every frame of each val clip: deterministic, so val_auc (which
            # picks the best epoch) does not move with the frames drawn, and the same frame-level ROC
            # AUC that dfd.evaluate reports; it costs one inference per stored frame.
            frames=self.frames is not None,
            # Every worker evaluates the whole validation split: shards of unequal size would give
            # workers unequal step counts and hang the all-reduce; the metrics come out the same.
            shard_files=config.strategy != "multi_worker")

    def class_weights(self, config: train_flags.TrainConfig) -> dict[int, float] | None:
        return class_weights(self.meta, config.class_weight_threshold, config.pseudo_fake_spec,
                             config.train_classes, self.extras, self.train_frames)


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


def frames_per_clip(config: train_flags.TrainConfig, spec, extra_kinds=()) -> int | None:
    """K frames per clip when an image model trains on video records (None: the data's own examples).

    An image model on video data reads frames: --frames_per_clip=K random ones per clip and epoch, 1 when
    unset (an epoch then has as many steps as with clips). Video models need video data; image data
    has one frame per record, so --frames_per_clip applies to neither (unless an --extra_train_data
    folder holds video: `extra_kinds`, see train_frames_per_clip).
    """
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


def train_frames_per_clip(config: train_flags.TrainConfig, frames: int | None,
                          extras: list[DatasetMetadata]) -> int | None:
    """The frames_per_clip of dfd.data.pipeline.make_train_dataset: K for an image model (video records of
    --data or of --extra_train_data give K frames each, image records one), None for a video model.
    `frames`: frames_per_clip of --data and the validation split."""
    if frames is None and extras and models.model_kind(config.model) == "image":
        return config.frames_per_clip or 1
    return frames
