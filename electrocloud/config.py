"""Configuration loading: YAML files validated by pydantic, overridable by environment.

Every service config is a :class:`ServiceSettings` subclass. :func:`load_settings`
reads the YAML file keeping each key's line number, lets environment variables
override it (``<PREFIX><FIELD>__<SUBFIELD>``, e.g. ``ELECTROCLOUD_EDGE_MQTT__URL``)
and turns every validation problem into a :class:`ConfigProblem` that names the
file and line (or the environment variable), the field and the fix.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from electrocloud.errors import ConfigError, ConfigProblem

Loc = tuple[str | int, ...]
LineMap = dict[Loc, int]
S = TypeVar("S", bound="ServiceSettings")


class Section(BaseModel):
    """Base of nested config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ServiceSettings(BaseSettings):
    """Base of a service's top-level settings.

    Precedence (highest first): environment variables, the YAML file, defaults.
    """

    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must win over it.
        return env_settings, init_settings


def read_config_text(path: str | Path) -> str:
    """The text of a config file; ConfigError naming the file when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        source = str(path)
        raise ConfigError(
            source, [ConfigProblem(source, "(file)", f"cannot read: {exc.strerror}")]
        ) from None


def read_yaml_with_lines(text: str, source: str) -> tuple[Any, LineMap]:
    """Parse YAML and return ``(data, lines)`` where ``lines[loc]`` is a key's 1-based line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: LineMap = {}
        data = _construct(loader, node, (), lines) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(
            source, [ConfigProblem(where, "(file)", f"not valid YAML: {exc}")]
        ) from None
    finally:
        loader.dispose()
    return data, lines


def _construct(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, lines: LineMap) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            mapping[key] = _construct(loader, value_node, (*loc, key), lines)
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return mapping
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*loc, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def field_path(loc: Loc) -> str:
    """``("meters", 1, "unit_id")`` -> ``"meters[1].unit_id"``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _nearest_line(loc: Loc, lines: LineMap) -> int | None:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The nested model class that owns the last element of ``loc`` (best effort)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = _unwrap_model(fields[part].annotation)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _advice(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = str(error["msg"])
    if kind == "extra_forbidden" and loc:
        owner = _model_at(model, loc)
        known = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}"
        return f"unknown field; remove it ({hint})"
    if kind == "missing":
        return "required field is missing; add it"
    if "input" in error and kind not in ("model_type", "dict_type"):
        return f"{message} (got {error['input']!r})"
    return message


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    *,
    source: str,
    lines: LineMap,
    env_prefix: str = "",
    env_locs: Mapping[Loc, str] | None = None,
) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError into problems that point at file lines."""
    problems = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        env_var = next(
            (var for env_loc, var in (env_locs or {}).items() if loc[: len(env_loc)] == env_loc),
            None,
        )
        if env_var is not None:
            where = f"environment variable {env_var}"
        else:
            line = _nearest_line(loc, lines)
            where = f"{source}:{line}" if line is not None else source
        problems.append(ConfigProblem(where, field_path(loc), _advice(error, model)))
    return problems


def _env_overrides(prefix: str, environ: Mapping[str, str]) -> dict[Loc, str]:
    """Config locations set by environment: ``{("mqtt", "url"): "PREFIX_MQTT__URL"}``."""
    found: dict[Loc, str] = {}
    for name in environ:
        if prefix and name.upper().startswith(prefix.upper()):
            rest = name[len(prefix) :].lower()
            found[tuple(rest.split("__"))] = name
    return found


def load_settings(cls: type[S], path: str | Path | None) -> S:
    """Load ``cls`` from a YAML file (optional) plus environment overrides.

    Raises :class:`ConfigError` naming the file, line, field and fix.
    """
    source = str(path) if path is not None else "(defaults)"
    data: Any = {}
    lines: LineMap = {}
    if path is not None:
        data, lines = read_yaml_with_lines(read_config_text(path), source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                source,
                [ConfigProblem(f"{source}:1", "(top level)", "must be a mapping of settings")],
            )
    prefix = str(cls.model_config.get("env_prefix") or "")
    try:
        return cls(**data)
    except ValidationError as exc:
        problems = validation_problems(
            exc, cls, source=source, lines=lines, env_locs=_env_overrides(prefix, os.environ)
        )
        raise ConfigError(source, problems) from None
