"""dfd.settings: each setting declared once on its dataclass, and its flag generated from it."""

import dataclasses
import typing

import pytest
from absl import flags

from dfd import settings, train_flags
from dfd.convert.config import ConvertConfig
from dfd.data.preprocessing import PreprocessSpec
from dfd.settings import setting
from dfd.training.config import Augment
from dfd.tuning import flags as tune_flags

SETTINGS_CLASSES = [train_flags.TrainConfig, tune_flags.TuneOptions, ConvertConfig]


def _defined(define, cls):
    flag_values = flags.FlagValues()
    define(flag_values)
    return flag_values


DEFINERS = {train_flags.TrainConfig: train_flags.define_all_flags, tune_flags.TuneOptions: tune_flags.define_tune_flags,
            ConvertConfig: lambda flag_values: settings.define_flags(ConvertConfig, flag_values)}


def _leaf_fields(cls, prefix=""):
    """(flag name expected, dataclass field) of every declared field, nested dataclasses walked."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        declared = field.metadata.get("dfd_setting")
        if declared is None:
            continue
        if declared.nested_prefix is not None:
            yield from _leaf_fields(hints[field.name], prefix + declared.nested_prefix)
        else:
            yield prefix + (declared.flag or field.name), field


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_has_exactly_one_flag_with_its_default_and_choices(cls):
    flag_values = _defined(DEFINERS[cls], cls)
    names = [name for name, _ in _leaf_fields(cls)]
    assert len(names) == len(set(names)), "two fields make the same flag"
    undeclared = [field.name for field in dataclasses.fields(cls) if "dfd_setting" not in field.metadata]
    assert undeclared == (["hparams"] if cls is train_flags.TrainConfig else [])   # hparams: dfd.models' flags
    for name, field in _leaf_fields(cls):
        flag = flag_values[name]
        declared = field.metadata["dfd_setting"]
        assert declared.help and flag.help.endswith(declared.help)   # enums: absl prefixes <a|b>:
        if field.default is dataclasses.MISSING:
            expected = None
        elif declared.format is not None:
            expected = declared.format(field.default)
        elif isinstance(field.default, tuple):
            expected = [str(value) for value in field.default]
        else:
            expected = field.default
        assert flag.default == expected, name
        if declared.choices:
            assert list(flag.parser.enum_values) == list(declared.choices), name


def test_train_flags_keep_their_names_and_defaults():
    flag_values = _defined(train_flags.define_all_flags, train_flags.TrainConfig)
    expected = {"augment_flip": True, "augment_jpeg": "none", "augment_cutout": 0.0, "epochs": 40,
                "learning_rate": 1e-3, "fine_tune_learning_rate": None, "precision": "auto", "data": None,
                "train_classes": "all", "pseudo_fakes": "none", "cache": "none", "data_service_timeout_s": 600.0}
    assert {name: flag_values[name].default for name in expected} == expected
    assert list(flag_values["strategy"].parser.enum_values) == ["auto", "one_device", "mirrored", "multi_worker"]
    converted = _defined(DEFINERS[ConvertConfig], ConvertConfig)
    assert (converted["frames"].default, converted["output"].default, converted["face_crop"].default,
            converted["beam_options"].default) == (16, "tfrecords/dataset", "none", "--runner=DirectRunner")
    assert list(converted["sampling"].parser.enum_values) == ["uniform", "contiguous"]
    # The preprocessing options are PreprocessSpec's own declarations.
    for name in ("jpeg_quality", "sampling", "short_clips", "face_crop", "face_margin", "face_detect_size",
                 "max_no_face_fraction"):
        spec_field = PreprocessSpec.__dataclass_fields__[name]
        assert converted[name].help.endswith(spec_field.metadata["dfd_setting"].help)
        assert converted[name].default == spec_field.default


def _flagfile_round_trip(config, define, from_flags, tmp_path, lines):
    path = tmp_path / "config.flags"
    path.write_text("\n".join(lines) + "\n")
    flag_values = flags.FlagValues()
    define(flag_values)
    flag_values(["test", f"--flagfile={path}"])
    return from_flags(flag_values)


def test_a_training_flagfile_parses_back_to_the_same_config(tmp_path):
    config = train_flags.TrainConfig(
        data="d", run_dir="r", model="image_cnn", hparams={"dropout": 0.25, "conv_filters": "8,16"}, epochs=3,
        fine_tune_learning_rate=None, augment=Augment(flip=False, crop=0.2, color=0.1, jpeg_quality=(30, 95)),
        pseudo_fakes="sbi", pseudo_fake_fraction=0.25, train_classes="real", precision="float32",
        extra_train_data="e1,e2", profile_batch="10,20")
    text = train_flags.flagfile_text(config)
    assert "--noaugment_flip\n" in text and "--augment_jpeg=30,95\n" in text and "fine_tune" not in text
    again = _flagfile_round_trip(config, train_flags.define_all_flags, train_flags.config_from_flags, tmp_path,
                                 text.splitlines())
    assert again == config
    # The defaults too: every flag written, and read back equal.
    plain = train_flags.TrainConfig(data="d", run_dir="r")
    assert _flagfile_round_trip(plain, train_flags.define_all_flags, train_flags.config_from_flags, tmp_path,
                                train_flags.flagfile_text(plain).splitlines()) == plain


def test_a_tune_flagfile_parses_back_to_the_same_options(tmp_path):
    options = tune_flags.TuneOptions(tuner="random", max_trials=4, max_gap=0.05, search_models=("image_cnn",),
                                     search_input_sizes=(32, 48), search_augment_strengths=(0.0, 1.0),
                                     retrain_best=True)
    training = train_flags.flagfile_text(train_flags.TrainConfig(data="d", run_dir="r")).splitlines()
    again = _flagfile_round_trip(options, tune_flags.define_tune_flags, tune_flags.options_from_flags, tmp_path,
                                 training + tune_flags.flag_lines(options))
    assert again == options


def test_a_conversion_flagfile_parses_back_to_the_same_config(tmp_path):
    config = ConvertConfig(output="out", source="src", num_frames=8, frame_size=32, encoding="jpeg",
                           face_crop="mtcnn", face_margin=1.5, sampling="contiguous", workers=2, progress=False)
    lines = settings.flag_lines(config)
    assert "--frames=8" in lines and "--noprogress" in lines and not any(line.startswith("--kind") for line in lines)
    again = _flagfile_round_trip(config, DEFINERS[ConvertConfig],
                                 lambda flag_values: settings.from_flags(ConvertConfig, flag_values), tmp_path, lines)
    assert again == config


def test_flat_augment_names_reach_the_nested_augment():
    config = train_flags.TrainConfig(data="d", run_dir="r", augment_crop=0.2, augment_jpeg="30,95")
    assert config.augment == Augment(crop=0.2, jpeg_quality=(30, 95))
    assert (config.augment_crop, config.augment_jpeg, config.augment_flip) == (0.2, "30,95", True)
    changed = dataclasses.replace(config, augment_crop=0.3, seed=2)
    assert changed.augment == Augment(crop=0.3, jpeg_quality=(30, 95)) and changed.seed == 2
    with pytest.raises(AttributeError):
        _ = config.augment_nothing


def test_choices_and_kinds_are_checked_from_the_declaration():
    @dataclasses.dataclass(frozen=True)
    class Options:
        mode: str = setting("a", "Mode.", choices=("a", "b"))
        sizes: tuple = setting((1, 2), "Sizes.")
        limit: float | None = setting(None, "Limit.")

        def __post_init__(self):
            settings.check_choices(self)

    flag_values = flags.FlagValues()
    settings.define_flags(Options, flag_values)
    flag_values(["test", "--mode=b", "--sizes=3,4", "--limit=0.5"])
    assert settings.from_flags(Options, flag_values) == Options(mode="b", sizes=["3", "4"], limit=0.5)
    assert settings.flag_lines(Options()) == ["--mode=a", "--sizes=1,2"]   # unset limit left out
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        Options(mode="c")
    with pytest.raises(flags.IllegalFlagValueError):
        flag_values(["test", "--mode=c"])
