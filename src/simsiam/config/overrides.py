"""Changing a config: dotted ``key=value`` overrides, YAML mappings, and a saved dict read back.

Every value is converted to its field's type here, so that a typo or a wrong type fails with the
key's name before anything runs.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from .schema import CHOICES, Config, ConfigError


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(cfg: Optional[Config] = None) -> list[str]:
    """Every dotted key a config accepts, e.g. ``optim.base_lr``."""
    keys = []
    for name, tp in _field_types(Config).items():
        if dataclasses.is_dataclass(tp):
            keys += [f"{name}.{sub}" for sub in _field_types(tp)]
        else:
            keys.append(name)
    return keys


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a YAML scalar or a command-line string) to the field's type, or explain why not."""
    optional = typing.get_origin(tp) is typing.Union and type(None) in typing.get_args(tp)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:  # a YAML list, or a comma-separated string: [jsonl,csv] or jsonl,csv
        items = value if isinstance(value, list) else [] if value is None else str(value).strip("[]").split(",")
        return [_coerce(key, item.strip() if isinstance(item, str) else item, typing.get_args(tp)[0])
                for item in items if not (isinstance(item, str) and not item.strip())]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML 1.1 reads off/on/no/yes/true/false as booleans
            return _bool_word(key, value)
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _bool_word(key: str, value: bool) -> str:
    """A boolean given to a string field, in the words of the key's vocabulary: "true"/"false" where it
    has them (run.compile, a bool in older configs and checkpoints), else "on"/"off" (run.amp=off)."""
    words = ("true", "false") if "true" in CHOICES.get(key, ()) else ("on", "off")
    return words[0] if value else words[1]


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key (``optim.base_lr``) with type checking; unknown keys list the valid ones."""
    parts = key.split(".")
    target: Any = cfg
    for i, part in enumerate(parts):
        types = _field_types(type(target))
        if part not in types:
            scope = ".".join(parts[:i]) or "the config"
            choices = ", ".join(sorted(types))
            raise ConfigError(f"unknown config key {key!r}: {scope} has no field {part!r}; valid: {choices}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(types[part]):
                raise ConfigError(f"{key!r} is a section; set one of its fields, e.g. {key}.{next(iter(_field_types(types[part])))}")
            setattr(target, part, _coerce(key, value, types[part]))
        else:
            if not dataclasses.is_dataclass(types[part]):
                raise ConfigError(f"unknown config key {key!r}: {'.'.join(parts[:i + 1])} is not a section")
            target = getattr(target, part)


def apply_mapping(cfg: Config, mapping: dict, prefix: str = "") -> Config:
    """Apply a nested dict (as read from YAML) onto ``cfg``."""
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            apply_mapping(cfg, v, key + ".")
        else:
            set_value(cfg, key, v)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings; values are parsed as YAML scalars (``1e-3``, ``true``, ``none``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.epochs=10)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); "
                              f"quote it, e.g. {key.strip()}='\"...\"'") from None
        set_value(cfg, key.strip(), value)
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(err)} (indent with spaces, "
                          "not tabs; `key: value` pairs under section names)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not a text file (a YAML file was expected)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _yaml_problem(err: Exception) -> str:
    """The YAML parser's complaint in a few words, with its line and column."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def from_dict(data: dict) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    return apply_mapping(Config(), data)
