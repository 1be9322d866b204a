"""Settings declared once: a dataclass field holds its default, choices and help; the absl flags are made from it.

    @dataclasses.dataclass(frozen=True)
    class Options:
        epochs: int = setting(40, "Training epochs.")
        precision: str = setting("auto", "auto: mixed_float16 on a GPU.", choices=PRECISIONS)
        augment: Augment = nested(Augment, prefix="augment_")   # Augment's fields become --augment_*

    define_flags(Options, flag_values)          # DEFINE_integer("epochs", 40, ...), DEFINE_enum("precision", ...)
    options = from_flags(Options, flag_values)  # Options(epochs=..., precision=..., augment=Augment(...))
    flag_lines(options)                         # ["--epochs=40", "--precision=auto", ...]: a flagfile's lines

The absl flag kind follows the annotation: bool, int, float, str (an enum with `choices`), a tuple (a
comma-separated list), each optionally `| None` (the flag then defaults to None, "unset"). A field whose
flag form differs from its value (--augment_jpeg=30,95 for the tuple (30, 95)) gives `parse` (flag value to
field value) and `format` (field value to flag value). Fields not declared with `setting` (e.g. a dict of
model hparams) have no flag. Help and choices live in the field's metadata, so nothing restates them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Callable, Iterator

from absl import flags

_KEY = "dfd_setting"


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a dataclass field says about its flag (in `field.metadata["dfd_setting"]`)."""

    help: str
    choices: tuple | None = None
    flag: str | None = None               # flag name (after a nested prefix); None: the field's name
    parse: Callable | None = None         # flag value -> field value
    format: Callable | None = None        # field value -> flag value (and the flag's default)
    nested_prefix: str | None = None      # a nested settings dataclass: its flags are prefix + their names


def setting(default=dataclasses.MISSING, help: str = "", *, choices=None, flag: str | None = None,
            parse: Callable | None = None, format: Callable | None = None, default_factory=dataclasses.MISSING):
    """A dataclass field that is also a flag (see the module docstring)."""
    meta = {_KEY: Setting(help=help, choices=tuple(choices) if choices is not None else None, flag=flag,
                          parse=parse, format=format)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def nested(cls, prefix: str = ""):
    """A field holding a settings dataclass; its flags are named prefix + each of its own."""
    return dataclasses.field(default_factory=cls, metadata={_KEY: Setting(help="", nested_prefix=prefix)})


def like(cls, name: str, **changes):
    """The declaration of `cls`'s field `name` (default, choices, help), for a second dataclass holding the
    same setting (make_tfrecords' ConvertConfig and the PreprocessSpec it builds)."""
    field = cls.__dataclass_fields__[name]
    declared = field.metadata[_KEY]
    default = changes.pop("default", field.default)
    values = dict(help=declared.help, choices=declared.choices, flag=declared.flag, parse=declared.parse,
                  format=declared.format)
    values.update(changes)
    return setting(default, **values)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One generated flag: its name, where its value goes, and how it is defined."""

    name: str
    path: tuple[str, ...]      # field names from the outer dataclass down to this one
    kind: str                  # boolean | integer | float | string | enum | list
    default: object            # the flag's default (the field's, formatted)
    field_default: object      # the field's default (dataclasses.MISSING when it has none)
    setting: Setting


def _base_type(annotation) -> tuple[object, bool]:
    """(the type, whether None is allowed) of an annotation such as `float | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return args[0], True
    return annotation, False


def _kind(annotation, declared: Setting) -> str:
    base, _ = _base_type(annotation)
    base = typing.get_origin(base) or base
    if declared.format is not None:   # formatted values are strings on the command line
        return "enum" if declared.choices else "string"
    if base is bool:
        return "boolean"
    if base is int:
        return "integer"
    if base is float:
        return "float"
    if base in (tuple, list):
        return "list"
    if base is str:
        return "enum" if declared.choices else "string"
    raise TypeError(f"no flag kind for the annotation {annotation!r}")


def _field_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _flag_default(value, declared: Setting):
    if value is dataclasses.MISSING:
        return None
    if declared.format is not None:
        return declared.format(value)
    if isinstance(value, (tuple, list)):
        return [str(item) for item in value]
    return value


def settings_flags(cls, prefix: str = "", path: tuple = ()) -> Iterator[Flag]:
    """Every flag of the settings dataclass `cls`, in field order (nested ones where their field is)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(_KEY)
        if declared is None:
            continue
        if declared.nested_prefix is not None:
            yield from settings_flags(hints[field.name], prefix + declared.nested_prefix, path + (field.name,))
            continue
        default = _field_default(field)
        yield Flag(name=prefix + (declared.flag or field.name), path=path + (field.name,),
                   kind=_kind(hints[field.name], declared), default=_flag_default(default, declared),
                   field_default=default, setting=declared)


def define_flags(cls, flag_values=None, only=None, exclude=()) -> None:
    """Defines the flags of `cls` on `flag_values` (absl's FLAGS by default), skipping flags already defined
    there (so two entry points sharing settings may both call it). only/exclude: flag names to keep/leave out."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    for flag in settings_flags(cls):
        if flag.name in flag_values or flag.name in exclude or (only is not None and flag.name not in only):
            continue
        declared = flag.setting
        if flag.kind == "enum":
            flags.DEFINE_enum(flag.name, flag.default, list(declared.choices), declared.help, flag_values=flag_values)
        else:
            define = {"boolean": flags.DEFINE_boolean, "integer": flags.DEFINE_integer, "float": flags.DEFINE_float,
                      "string": flags.DEFINE_string, "list": flags.DEFINE_list}[flag.kind]
            define(flag.name, flag.default, declared.help, flag_values=flag_values)


def flag_values_of(cls, flag_values=None) -> dict:
    """{field name: value} of `cls` from parsed flags (nested dataclasses built); for `cls(**values)`."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    values: dict = {}
    for flag in settings_flags(cls):
        value = flag_values[flag.name].value
        if flag.setting.parse is not None:
            value = flag.setting.parse(value)
        target = values
        for name in flag.path[:-1]:
            target = target.setdefault(name, {})
        target[flag.path[-1]] = value
    return _build(cls, values)


def _build(cls, values: dict) -> dict:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(_KEY)
        if declared is not None and declared.nested_prefix is not None and field.name in values:
            nested_cls = hints[field.name]
            values[field.name] = nested_cls(**_build(nested_cls, values[field.name]))
    return values


def from_flags(cls, flag_values=None, **extra):
    """An instance of `cls` from parsed flags; `extra`: values of fields that have no flag."""
    return cls(**flag_values_of(cls, flag_values), **extra)


def flag_line(name: str, value) -> str:
    """One flagfile line: --name=value, --name / --noname for booleans, lists comma-separated."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, (tuple, list)):
        value = ",".join(str(v) for v in value)
    return f"--{name}={value}"


def flag_value(instance, flag: Flag):
    """The value of `flag` in `instance`, in its flag form (None: unset)."""
    value = instance
    for name in flag.path:
        value = getattr(value, name)
    return flag.setting.format(value) if flag.setting.format is not None and value is not None else value


def flag_lines(instance, exclude=()) -> list[str]:
    """`instance` as flagfile lines, in field order; unset (None) values are left out (the flag's default)."""
    lines = []
    for flag in settings_flags(type(instance)):
        value = flag_value(instance, flag)
        if value is not None and flag.name not in exclude:
            lines.append(flag_line(flag.name, value))
    return lines


def check_choices(instance) -> None:
    """ValueError for a field of `instance` whose value is not among its declared choices (None allowed
    where the field's default is None)."""
    for field in dataclasses.fields(instance):
        declared = field.metadata.get(_KEY)
        if declared is None or not declared.choices or declared.format is not None:
            continue
        value = getattr(instance, field.name)
        if value is None and field.default is None:
            continue
        if value not in declared.choices:
            raise ValueError(f"{field.name} must be one of {declared.choices}, got {value!r}")
