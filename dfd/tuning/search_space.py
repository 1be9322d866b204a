"""The tuner's search space, in one place: simplified variants of each dfd model, and the training recipe.

    hparams, learning_rate = define_search_space(hp, model_name, base_hparams, input_shape)
    models.build_model(model_name, input_shape, **hparams)

    recipe = make_recipe(config, input_shape, model_names=..., input_sizes=..., augment_strengths=...,
                         pseudo_fake_fractions=...)          # the dfd.tune --search_* flags, checked
    trial_config = define_trial(hp, config, input_shape, recipe)   # a TrainConfig: what dfd.train trains

Smoke test: define_search_space(keras_tuner.HyperParameters(), ...) gives every hparam its default,
and the defaults are the seed's architecture (cnn_lstm: 552,609 parameters), so the search always
contains the hand-made starting point and explores simpler ones around it (the seed found that its
first video model overfit and a simpler CNN did better).

What is searched:
  image_cnn, cnn_lstm  conv_blocks (1..3, fewer when the frames are too small), first_filters
                       (doubling per block, as 16, 32, 64 in the seed), kernel_size_<block> (3 or 5),
                       feature_pooling (the seed's flatten, or global_average: with flatten, fewer
                       blocks mean a *larger* dense layer; with global_average they mean a smaller
                       model), dense width (dense_units / frame_dense_units), dropout, l2,
                       learning_rate; cnn_lstm also lstm_units and head_units.
  cnn_lstm with --frame_cnn=PATH (two-stage): the loaded CNN fixes the frame features, so only the LSTM
                       head, dropout, l2, learning_rate and freeze_frame_cnn (frozen vs fine-tuned).
  inception_v3         head_units, dropout, learning_rate; freeze_backbone (frozen vs fine-tuned) only
                       with ImageNet weights (--backbone_weights=imagenet|PATH): a frozen random backbone
                       is a random feature extractor, not a variant worth a trial.
  efficientnet_b0, efficientnet_b4, xception and the <backbone>_video models
                       dropout, learning_rate, freeze_backbone only with weights (as inception_v3); the
                       video models also temporal (lstm or mean) and, for lstm, lstm_units and head_units.

Hparams given as flags (base_hparams, e.g. --lstm_units=32 in the flagfile) are pinned: they are not
searched and reach every trial as given. --conv_filters or --kernel_sizes pins the whole conv stack.

The recipe (define_trial; each part only when asked, so a plain search keeps the space above):
  model                --search_models=a,b,c: the model itself, hp.Choice("model"), among models of
                       --model's kind; each model's own space above under a conditional scope and the
                       name scope "<model>/" (e.g. xception/dropout), active only when it is chosen.
                       Hparams given as flags pin every searched model that has them.
  input_size           --search_input_sizes=64,96,128: the frame size the model sees (--input_size, an
                       on-device resize), at most the data's. image_cnn's conv-block range is fit for the
                       smallest size, so every trial's stack fits its frames.
  augment_strength     when the flags turn on any of --augment_crop/color/brightness/contrast/blur/noise/
                       cutout (their values are strength 1): one factor scaling them all,
                       --search_augment_strengths (0, 0.5, 1, 1.5; 0 keeps only --augment_flip). Strengths
                       that would push a value out of its range are left out.
  pseudo_fake_fraction with --pseudo_fakes: --search_pseudo_fake_fractions (0.25, 0.5, 0.75); each
                       fraction trains on its own input pipeline (dfd.tuning.search.TrainingSets).
The trial's TrainConfig carries the concrete values (scaled --augment_*, --pseudo_fake_fraction,
--model, --input_size), so best.flags records them for dfd.train.
"""

from __future__ import annotations

import dataclasses

import keras_tuner

from dfd import models
from dfd.models import backbones, resize
from dfd.models.backbone_models import TEMPORAL_HEADS
from dfd.models.layers import FEATURE_POOLINGS, conv_output_size

MAX_CONV_BLOCKS = 3            # the seed's stack; the search looks at it and at simpler ones
KERNEL_SIZES = (3, 5)
FIRST_FILTERS = (8, 16, 32)
DENSE_UNITS = (32, 64, 128, 256)
RECURRENT_UNITS = (16, 32, 64)
L2_WEIGHTS = (0.0, 1e-5, 1e-4, 1e-3)
INCEPTION_HEAD_UNITS = (128, 256, 512, 1024)
AUGMENT_STRENGTHS = (0.0, 0.5, 1.0, 1.5)
PSEUDO_FAKE_FRACTIONS = (0.25, 0.5, 0.75)
# The --augment_* strengths the recipe scales, with the largest value each op accepts
# (dfd.models.augmentation.DeviceAugment; --augment_color also sets saturation and hue/4).
SCALED_AUGMENTS = {"augment_crop": 0.999, "augment_color": 0.999, "augment_brightness": 0.999,
                   "augment_contrast": 0.999, "augment_blur": 10.0, "augment_noise": 0.999,
                   "augment_cutout": 0.999}


def max_conv_blocks(frame_shape: tuple) -> int:
    """Most conv blocks (up to MAX_CONV_BLOCKS) that still fit the frame with the largest kernel."""
    smallest_side = min(frame_shape[0], frame_shape[1])
    blocks = MAX_CONV_BLOCKS
    while blocks > 1 and conv_output_size(smallest_side, (max(KERNEL_SIZES),) * blocks) < 1:
        blocks -= 1
    if conv_output_size(smallest_side, (min(KERNEL_SIZES),)) < 1:
        raise ValueError(f"Frames of {frame_shape[0]}x{frame_shape[1]} are too small for even one conv block: "
                         "convert the data with a larger --size.")
    return blocks


def _conv_stack(hp, frame_shape: tuple, default_filters, default_kernels) -> dict:
    """conv_filters and kernel_sizes for build_model, from conv_blocks / first_filters / kernel_size_<i>."""
    smallest_side = min(frame_shape[0], frame_shape[1])
    most = max_conv_blocks(frame_shape)
    kernel_choices = [k for k in KERNEL_SIZES if conv_output_size(smallest_side, (k,) * most) >= 1]
    blocks = hp.Int("conv_blocks", 1, most, default=min(len(default_filters), most))
    first_filters = hp.Choice("first_filters", list(FIRST_FILTERS), default=default_filters[0])
    kernel_sizes = []
    for block in range(1, most + 1):
        # Block i's kernel exists only when there are at least i blocks: a conditional hparam, so
        # trials with fewer blocks neither record nor vary it.
        with hp.conditional_scope("conv_blocks", list(range(block, most + 1))):
            default = default_kernels[block - 1] if block <= len(default_kernels) else kernel_choices[0]
            kernel = hp.Choice(f"kernel_size_{block}", kernel_choices,
                               default=default if default in kernel_choices else kernel_choices[0])
        if block <= blocks:
            kernel_sizes.append(kernel)
    return {"conv_filters": tuple(first_filters * 2 ** index for index in range(blocks)),
            "kernel_sizes": tuple(kernel_sizes)}


def _learning_rate(hp, model_name: str) -> float:
    if models.has_backbone(model_name):   # a large pretrained network: the seed trained inception at 1e-4
        return hp.Float("learning_rate", 1e-5, 1e-3, sampling="log", default=1e-4)
    return hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)


def _is_set(value) -> bool:
    return value not in (None, "", "none")


def define_search_space(hp, model_name: str, base_hparams: dict | None = None,
                        input_shape: tuple | None = None) -> tuple[dict, float]:
    """Registers the search space of `model_name` on `hp`; returns (build_model kwargs, learning rate).

    base_hparams: the model hparams given as flags; they are pinned (see the module docstring).
    input_shape: the model's input (the dataset's example shape); it caps the conv blocks so every
        trial fits the frames. Needed for image_cnn and cnn_lstm unless the conv stack is pinned.
    Called by the HyperModel for every trial and again to replay the best trial into best.flags:
    with hp holding a trial's values it returns exactly that trial's model.
    """
    base = dict(base_hparams or {})
    models.check_hparams(model_name, base)   # raises for an unknown model too
    defaults = {**models.default_hparams(model_name), **base}

    def pick(name, define):   # a flag given on the command line pins the hparam
        return base[name] if name in base else define()

    hparams = dict(base)
    if models.has_backbone(model_name):
        if model_name == "inception_v3":
            hparams["head_units"] = pick("head_units", lambda: hp.Choice(
                "head_units", list(INCEPTION_HEAD_UNITS), default=defaults["head_units"]))
        if _is_set(defaults["backbone_weights"]):
            hparams["freeze_backbone"] = pick("freeze_backbone", lambda: hp.Boolean(
                "freeze_backbone", default=bool(defaults["freeze_backbone"])))
        if "temporal" in defaults:   # a <backbone>_video model
            hparams["temporal"] = pick("temporal", lambda: hp.Choice(
                "temporal", list(TEMPORAL_HEADS), default=defaults["temporal"]))
            for name in ("lstm_units", "head_units"):
                define = lambda name=name: hp.Choice(name, list(RECURRENT_UNITS), default=defaults[name])  # noqa: E731
                if "temporal" not in base:
                    # Only the LSTM head has them: conditional, so "mean" trials neither record nor vary them.
                    with hp.conditional_scope("temporal", ["lstm"]):
                        value = pick(name, define)
                elif hparams["temporal"] == "lstm":
                    value = pick(name, define)
                if hparams["temporal"] == "lstm":
                    hparams[name] = value
    else:
        two_stage = model_name == "cnn_lstm" and _is_set(defaults.get("frame_cnn"))
        if two_stage:
            hparams["freeze_frame_cnn"] = pick("freeze_frame_cnn", lambda: hp.Boolean(
                "freeze_frame_cnn", default=bool(defaults["freeze_frame_cnn"])))
        elif "conv_filters" not in base and "kernel_sizes" not in base:
            if input_shape is None:
                raise ValueError(f"define_search_space needs input_shape for {model_name} (the conv "
                                 "blocks must fit the frames)")
            frame_shape = tuple(input_shape)[-3:]
            hparams.update(_conv_stack(hp, frame_shape, defaults["conv_filters"], defaults["kernel_sizes"]))
        dense_name = "dense_units" if model_name == "image_cnn" else "frame_dense_units"
        if not two_stage:   # a loaded frame CNN keeps its own pooling and dense layer
            hparams["feature_pooling"] = pick("feature_pooling", lambda: hp.Choice(
                "feature_pooling", list(FEATURE_POOLINGS), default=defaults["feature_pooling"]))
            hparams[dense_name] = pick(dense_name, lambda: hp.Choice(
                dense_name, list(DENSE_UNITS), default=defaults[dense_name]))
        if model_name == "cnn_lstm":
            for name in ("lstm_units", "head_units"):
                hparams[name] = pick(name, lambda name=name: hp.Choice(
                    name, list(RECURRENT_UNITS), default=defaults[name]))
    hparams["dropout"] = pick("dropout", lambda: hp.Float(
        "dropout", 0.0, 0.5, step=0.05, default=float(defaults["dropout"])))
    hparams["dropout"] = round(float(hparams["dropout"]), 4)   # 0.30000000000000004 from the step grid
    if "l2" in defaults:
        hparams["l2"] = pick("l2", lambda: hp.Choice("l2", list(L2_WEIGHTS), default=float(defaults["l2"])))
    return hparams, _learning_rate(hp, model_name)


# --------------------------------------------------------------------------
# The recipe: model, frame size, augmentation strength, pseudo-fake fraction
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a search varies beyond config.model's own hparams; an empty tuple: not searched."""

    models: tuple = ()
    input_sizes: tuple = ()
    augment_strengths: tuple = ()
    pseudo_fake_fractions: tuple = ()

    @property
    def fields(self) -> tuple:
        """The TrainConfig fields a trial may change beyond hparams and learning rate (written to best.flags)."""
        names = ["model"]
        names += ["input_size"] if self.input_sizes else []
        names += list(SCALED_AUGMENTS) if self.augment_strengths else []
        names += ["pseudo_fake_fraction"] if self.pseudo_fake_fractions else []
        return tuple(names)

    def identity(self) -> dict:
        """The searched recipe, for the search's identity (search.json); {} when nothing is searched."""
        return {name: list(value) for name, value in dataclasses.asdict(self).items() if value}


def _scaled_augments(config, strength: float) -> dict:
    return {name: round(getattr(config, name) * strength, 6) for name in SCALED_AUGMENTS}


def make_recipe(config, input_shape: tuple, model_names: tuple = (), input_sizes: tuple = (),
                augment_strengths: tuple = AUGMENT_STRENGTHS,
                pseudo_fake_fractions: tuple = PSEUDO_FAKE_FRACTIONS) -> Recipe:
    """The Recipe the --search_* flags ask for on `config` (its data's examples: input_shape), checked.

    augment_strengths apply only when config turns a scalable augmentation on, pseudo_fake_fractions only
    with config.pseudo_fakes; models and input_sizes only when given. Raises ValueError saying what to change.
    """
    kind = models.model_kind(config.model)
    chosen = tuple(dict.fromkeys(model_names))
    for name in chosen:
        if name not in models.MODEL_NAMES:
            raise ValueError(f"--search_models: unknown model {name!r}; valid: "
                             f"{', '.join(models.MODEL_NAMES)}")
        if models.model_kind(name) != kind:
            same = [n for n in models.MODEL_NAMES if models.model_kind(n) == kind]
            raise ValueError(f"--search_models: {name} is not a {kind} model like --model={config.model}; "
                             f"the models searched together read the same examples: choose among {', '.join(same)}")
    frame = tuple(input_shape)[-3:-1]
    sizes = tuple(sorted({int(size) for size in input_sizes}))
    if sizes and (sizes[0] < 1 or sizes[-1] > min(frame)):
        raise ValueError(f"--search_input_sizes must be between 1 and the data's frame size {min(frame)} "
                         f"(the resize only shrinks what was stored), got {','.join(map(str, sizes))}")
    # Every searched model must take every searched size: a trial failing at build costs a slot.
    smallest = sizes[0] if sizes else (config.input_size or min(frame))
    for name in chosen or (config.model,):
        if models.has_backbone(name):
            backbone = name[:-len("_video")] if name.endswith("_video") else name
            try:
                backbones.check_frame_size(backbone, name, (smallest, smallest, 3))
            except ValueError:
                raise ValueError(f"{name} needs frames of at least {backbones.BACKBONES[backbone].min_size} "
                                 f"pixels but the search would feed it {smallest}: drop {name} from "
                                 "--search_models or the smaller sizes from --search_input_sizes") from None
    strengths = ()
    if any(getattr(config, name) for name in SCALED_AUGMENTS):
        strengths = tuple(sorted({float(strength) for strength in augment_strengths
                                  if strength >= 0 and all(value <= SCALED_AUGMENTS[name] for name, value
                                                           in _scaled_augments(config, strength).items())}))
        if augment_strengths and not strengths:
            raise ValueError(f"--search_augment_strengths={','.join(map(str, augment_strengths))}: every strength "
                             "takes an --augment_* value out of its range; give smaller strengths")
    fractions = ()
    if config.pseudo_fakes != "none":
        fractions = tuple(sorted({float(fraction) for fraction in pseudo_fake_fractions}))
        for fraction in fractions:
            dataclasses.replace(config, pseudo_fake_fraction=fraction)   # raises for a fraction out of (0, 1]
    return Recipe(chosen, sizes, strengths, fractions)


def _default(values: tuple, preferred):
    return preferred if preferred in values else values[0]


class _InactiveDefaults:
    """hp for one of several searched models: registers its hparams, and where the trial did not choose
    that model (keras-tuner then returns None) gives their defaults, so define_search_space still runs;
    its result is thrown away."""

    def __init__(self, hp):
        self._hp = hp

    def __getattr__(self, name):   # conditional_scope, values... of the real container
        return getattr(self._hp, name)

    def _value(self, kind, *args, **kwargs):
        value = getattr(self._hp, kind)(*args, **kwargs)
        if value is None:
            value = getattr(keras_tuner.HyperParameters(), kind)(*args, **kwargs)
        return value

    def Choice(self, *args, **kwargs):  # noqa: N802 (keras-tuner's names)
        return self._value("Choice", *args, **kwargs)

    def Int(self, *args, **kwargs):  # noqa: N802
        return self._value("Int", *args, **kwargs)

    def Float(self, *args, **kwargs):  # noqa: N802
        return self._value("Float", *args, **kwargs)

    def Boolean(self, *args, **kwargs):  # noqa: N802
        return self._value("Boolean", *args, **kwargs)


def define_trial(hp, config, input_shape: tuple, recipe: Recipe = Recipe()):
    """Registers the whole space on `hp` and returns the TrainConfig of the trial `hp` holds.

    config: the trainer's settings (pinned hparams, --augment_* at strength 1...); input_shape: the
    data's example shape. Without a recipe this is define_search_space on config.model.
    """
    model = config.model
    if recipe.models:
        model = hp.Choice("model", list(recipe.models), default=_default(recipe.models, config.model))
    input_size = config.input_size
    if recipe.input_sizes:
        input_size = hp.Choice("input_size", list(recipe.input_sizes),
                               default=_default(recipe.input_sizes, config.input_size or max(recipe.input_sizes)))
    # The conv blocks must fit the smallest frames any trial feeds the model.
    smallest = min(recipe.input_sizes) if recipe.input_sizes else config.input_size
    shape = resize.resized_shape(input_shape, smallest) if input_shape is not None else None
    if recipe.models:
        for name in recipe.models:
            pinned = {key: value for key, value in config.hparams.items() if key in models.default_hparams(name)}
            with hp.conditional_scope("model", [name]), hp.name_scope(name):
                found = define_search_space(_InactiveDefaults(hp), name, pinned, shape)
            if name == model:
                hparams, learning_rate = found
    else:
        hparams, learning_rate = define_search_space(hp, model, config.hparams, shape)
    changes = {"model": model, "hparams": hparams, "learning_rate": learning_rate, "input_size": input_size}
    if recipe.augment_strengths:
        strength = hp.Choice("augment_strength", list(recipe.augment_strengths),
                             default=_default(recipe.augment_strengths, 1.0))
        changes.update(_scaled_augments(config, strength))
    if recipe.pseudo_fake_fractions:
        changes["pseudo_fake_fraction"] = hp.Choice(
            "pseudo_fake_fraction", list(recipe.pseudo_fake_fractions),
            default=_default(recipe.pseudo_fake_fractions, config.pseudo_fake_fraction))
    return dataclasses.replace(config, **changes)
