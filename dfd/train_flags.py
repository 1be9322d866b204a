"""Training flags, defined in functions so dfd.train and dfd.tune share them (and one flagfile serves both).

    define_data_flags(); define_model_flags(); define_train_flags()   # or define_all_flags()
    FLAGS(argv)                                                       # --flagfile=... then overrides
    config = config_from_flags(FLAGS)                                 # a plain TrainConfig
    flagfile_text(config)                                             # resolved flags, re-runnable
    hparams = model_hparams(FLAGS, config.model)                      # only the hparams given

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

from dfd import models
from dfd.data.pseudo_fakes import METHODS as PSEUDO_FAKE_METHODS
from dfd.data.pseudo_fakes import PseudoFakes

TRAIN_CLASSES = ("all", "real")   # dfd.data.pipeline.TRAIN_CLASSES (not imported: it imports TensorFlow)

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def define_flag(define, name, default, *args, flag_values=None, **kwargs):
    flag_values = flags.FLAGS if flag_values is None else flag_values
    if name not in flag_values:
        define(name, default, *args, flag_values=flag_values, **kwargs)


def define_data_flags(flag_values=None) -> None:
    define_flag(flags.DEFINE_string, "data", None,
            "TFRecord folder holding metadata.json and the shards (tools/make_tfrecords.py --output).", flag_values=flag_values)
    define_flag(flags.DEFINE_string, "extra_train_data", None,
            "More TFRecord folders (DIR[,DIR...]) whose train split joins the training set of --data, e.g. real "
            "face photos next to videos for --pseudo_fakes=sbi. Same frame size as --data; video or image "
            "records for an image model (video ones read as --frames_per_clip frames), clips of --data's length "
            "for a video model. Validation, evaluation and preprocessing stay those of --data.", flag_values=flag_values)
    define_flag(flags.DEFINE_string, "cache", "none",
            "none | memory | DIR: cache decoded examples (before augmentation) in RAM or in files under DIR.", flag_values=flag_values)
    define_flag(flags.DEFINE_boolean, "deterministic", False,
            "Fixed data order and seeded augmentation while training (slower input pipeline).", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "shuffle_buffer", 1024, "Records held for shuffling while training.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "frames_per_clip", 0,
            "Image model on video data: K random frames of each clip per epoch (new ones every epoch), batched "
            "as images (batch_size // K clips per batch; batch_size must be a multiple of K). 0: 1 for an "
            "image model on video data; video models and image data take no frames_per_clip.", flag_values=flag_values)
    # Training augmentation. All but --augment_jpeg run on the accelerator (dfd.models.augmentation),
    # with one random transform per clip shared by its frames; none acts at evaluation or prediction.
    define_flag(flags.DEFINE_boolean, "augment_flip", True, "Random horizontal flip (same for every frame of a clip).", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_crop", 0.0,
            "Random resized crop: box height and width drawn from [1-x, 1] of the frame, random position, "
            "resized back (zoom + shift), e.g. 0.2; 0 turns it off.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_color", 0.0,
            "Colour jitter: brightness, contrast and saturation change up to x, hue up to x/4 of a turn "
            "(e.g. 0.2); 0 turns it off.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_brightness", 0.0,
            "Max brightness change as a fraction of 255, per clip (e.g. 0.1); overrides the brightness "
            "part of --augment_color when set.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_contrast", 0.0,
            "Max contrast change: factor in [1-x, 1+x] per clip (e.g. 0.1); overrides the contrast part "
            "of --augment_color when set.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_blur", 0.0,
            "Gaussian blur with sigma drawn from [0, x] pixels per clip (e.g. 1.5); 0 turns it off.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_noise", 0.0,
            "Gaussian noise with standard deviation drawn from [0, x] x 255 per clip (e.g. 0.03); 0 turns it off.",
            flag_values=flag_values)
    define_flag(flags.DEFINE_float, "augment_cutout", 0.0,
            "Cutout: on half the clips a mid-grey box of x times the frame's height and width at a random "
            "place, the same on every frame (e.g. 0.3); 0 turns it off.", flag_values=flag_values)
    define_flag(flags.DEFINE_string, "augment_jpeg", "none",
            "JPEG re-compression on the host at a quality drawn from LOW,HIGH per clip (e.g. 30,95); none "
            "turns it off. Costs host CPU (see README).", flag_values=flag_values)
    define_flag(flags.DEFINE_enum, "pseudo_fakes", "none", list(PSEUDO_FAKE_METHODS),
            "sbi: turn real training clips into self-blended fakes on the fly (Shiohara & Yamasaki, "
            "CVPR 2022), from the face keypoints stored at conversion (a centred ellipse without them).",
            flag_values=flag_values)
    define_flag(flags.DEFINE_float, "pseudo_fake_fraction", 0.5,
            "With --pseudo_fakes: the fraction of real training clips made into fakes, in (0, 1].",
            flag_values=flag_values)
    define_flag(flags.DEFINE_string, "data_service", "",
            "grpc://HOST:PORT of a tf.data service dispatcher (python -m dfd.data_service): its workers read, "
            "decode and augment the training batches; validation stays local. Empty: all input here.",
            flag_values=flag_values)
    define_flag(flags.DEFINE_float, "data_service_timeout_s", 600.0,
            "With --data_service: end the run with an error when one training step waits this long for its "
            "batch (a dead service worker stalls an epoch for ever); re-running resumes.", flag_values=flag_values)
    define_flag(flags.DEFINE_enum, "train_classes", "all", list(TRAIN_CLASSES),
            "real: train on the train split's real clips only (with --pseudo_fakes=sbi, the SBI recipe); "
            "validation still uses the whole val split.", flag_values=flag_values)


# What a hparam's values mean, where its name does not say it.
_HPARAM_NOTES = {
    "feature_pooling": "flatten (the seed) | global_average: how the last conv map becomes the frame "
                       "features; global_average keeps the dense layer small whatever the frame size. ",
    "backbone_weights": "none | imagenet (Keras's own download, then its cache ~/.keras/models or "
                        "KERAS_HOME/models) | PATH (a local notop .h5 file, or a folder holding it): the "
                        "backbone's starting weights; README 'Backbones' has the offline recipe. ",
    "freeze_backbone": "Train the head only, for the whole run (batch norm in inference mode). ",
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
    define_flag(flags.DEFINE_enum, "model", "cnn_lstm", list(models.MODEL_NAMES), "Model to train, by name.", flag_values=flag_values)
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
    define_flag(flags.DEFINE_string, "run_dir", None, "Run directory (e.g. runs/video); re-running resumes it.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "epochs", 40, "Training epochs.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "batch_size", 32, "Global batch size (split across replicas).", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "learning_rate", 1e-3, "Adam learning rate.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "warmup_epochs", 0,
            "Backbone models: train the head only (backbone frozen) for the first N epochs at --learning_rate, "
            "then everything at --fine_tune_learning_rate. 0 turns the warm-up off.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "fine_tune_learning_rate", None,
            "Adam learning rate after the warm-up (--warmup_epochs); unset means --learning_rate / 10.",
            flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "input_size", 0,
            "Resize frames to NxN on the accelerator, in front of the model (dfd.models.resize): the saved model "
            "still takes the data's frames, so evaluate, predict and export need nothing else. 0: the data's "
            "own frame size.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "seed", 0, "Seed for weights, shuffling and augmentation.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "patience", 5, "EarlyStopping patience in epochs on val_auc; 0 turns it off.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "reduce_lr_patience", 0,
            "ReduceLROnPlateau patience in epochs on val_loss; 0 turns it off.", flag_values=flag_values)
    define_flag(flags.DEFINE_float, "class_weight_threshold", 1.2,
            "Weight classes when the train split's larger class outnumbers the smaller by this factor.", flag_values=flag_values)
    define_flag(flags.DEFINE_enum, "precision", "auto", list(PRECISIONS),
            "auto: mixed_float16 when a GPU is visible, float32 on CPU.", flag_values=flag_values)
    define_flag(flags.DEFINE_boolean, "jit_compile", False, "Compile train steps with XLA.", flag_values=flag_values)
    define_flag(flags.DEFINE_enum, "strategy", "auto", list(STRATEGIES),
            "auto: mirrored with several GPUs, else one device. multi_worker reads TF_CONFIG.", flag_values=flag_values)
    define_flag(flags.DEFINE_string, "profile_batch", "0",
            "TensorBoard profiler batches, e.g. 10,20; 0 turns profiling off.", flag_values=flag_values)
    define_flag(flags.DEFINE_integer, "verbose", 1, "Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch.", flag_values=flag_values)


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

    data: str
    run_dir: str
    model: str = "cnn_lstm"
    extra_train_data: str | None = None   # DIR[,DIR...]; None (or ""): none
    hparams: dict = dataclasses.field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_epochs: int = 0
    fine_tune_learning_rate: float | None = None   # None: learning_rate / 10
    input_size: int = 0                            # 0: the data's frame size
    seed: int = 0
    cache: str = "none"
    deterministic: bool = False
    shuffle_buffer: int = 1024
    frames_per_clip: int = 0
    augment_flip: bool = True
    augment_crop: float = 0.0
    augment_color: float = 0.0
    augment_brightness: float = 0.0
    augment_contrast: float = 0.0
    pseudo_fakes: str = "none"
    pseudo_fake_fraction: float = 0.5
    train_classes: str = "all"
    augment_blur: float = 0.0
    augment_noise: float = 0.0
    augment_cutout: float = 0.0
    augment_jpeg: str = "none"
    data_service: str = ""
    data_service_timeout_s: float = 600.0
    patience: int = 5
    reduce_lr_patience: int = 0
    class_weight_threshold: float = 1.2
    precision: str = "auto"
    jit_compile: bool = False
    strategy: str = "auto"
    profile_batch: str = "0"
    verbose: int = 1

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.train_classes not in TRAIN_CLASSES:
            raise ValueError(f"train_classes must be one of {TRAIN_CLASSES}, got {self.train_classes!r}")
        if self.data_service:
            from dfd.data_service import check_address   # TensorFlow-free
            check_address(self.data_service)
        self.pseudo_fake_spec   # checks --pseudo_fakes and --pseudo_fake_fraction
        if self.warmup_epochs:
            self._check_warmup()
        if self.frames_per_clip < 0:
            raise ValueError(f"--frames_per_clip must be >= 1 (or 0: the default), got {self.frames_per_clip}")
        # Raise now, not after the data is opened: ranges of every augmentation flag.
        device_augment(self)
        host_augment(self)

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
            raise ValueError(f"--warmup_epochs trains the head of a pretrained backbone first, but --model={self.model} "
                             f"has no backbone; use one of {backbone_models}, or --warmup_epochs=0")
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
        elif name.endswith("units") and value < 1:
            problems.append(f"--{name}={value} must be at least 1")
    return problems


def device_augment(config: TrainConfig):
    """The on-device augmentation of `config` (dfd.models.augmentation.DeviceAugment).

    --augment_color sets brightness, contrast and saturation to x and hue to x/4 of a turn;
    --augment_brightness / --augment_contrast (the older flags) override their part when set.
    """
    from dfd.models.augmentation import DeviceAugment
    color = config.augment_color
    return DeviceAugment(flip=config.augment_flip, crop=config.augment_crop,
                         brightness=config.augment_brightness or color, contrast=config.augment_contrast or color,
                         saturation=color, hue=color / 4, blur=config.augment_blur, noise=config.augment_noise,
                         cutout=config.augment_cutout)


def host_augment(config: TrainConfig):
    """The host-side augmentation of `config` (dfd.data.pipeline.Augment: JPEG re-compression)."""
    from dfd.data import pipeline
    return pipeline.Augment(jpeg_quality=pipeline.parse_jpeg_quality(config.augment_jpeg))


def model_hparams(flag_values, model: str) -> dict:
    """The model hparams given as flags (not None), checked to belong to `model`."""
    given = {name: flag_values[name].value for name in hparam_names() if flag_values[name].value is not None}
    models.check_hparams(model, given)
    return given


def config_from_flags(flag_values=None) -> TrainConfig:
    flag_values = flag_values or flags.FLAGS
    fields = {field.name for field in dataclasses.fields(TrainConfig)} - {"hparams"}
    values = {name: flag_values[name].value for name in fields}
    return TrainConfig(hparams=model_hparams(flag_values, values["model"]), **values)


def flag_line(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (tuple, list)):
        value = ",".join(str(v) for v in value)
    return f"--{name}={value}"


def flagfile_text(config: TrainConfig) -> str:
    """The config in flagfile form: `python -m dfd.train --flagfile=FILE` re-runs the same training.

    Written from the resolved config rather than absl's FLAGS so train() called from Python (tests,
    the tuner) leaves the same file; unset model hparams stay unset ("the model's default").
    """
    lines = ["# Resolved flags of this run. Re-run (or resume) it with:",
             "#   python -m dfd.train --flagfile=THIS_FILE"]
    for field in dataclasses.fields(TrainConfig):
        # None: unset, the flag's own default (e.g. --fine_tune_learning_rate).
        if field.name != "hparams" and getattr(config, field.name) is not None:
            lines.append(flag_line(field.name, getattr(config, field.name)))
    for name in sorted(config.hparams):
        lines.append(flag_line(name, config.hparams[name]))
    return "\n".join(lines) + "\n"
