"""A name -> builder registry in the style of timm's: a decorator, a factory and a listing.

A builder's keyword-only arguments are its config schema: `config_schema` turns them into a
dataclass, so `model.width=abc` or `model.widht=64` fails at compose time like any other key,
and `width: Annotated[int, AT_LEAST_1] = 64` gives the key its valid range (ember.ranges).
"""

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

from ember.errors import ConfigError
from ember.ranges import check_annotated


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "model" or "data", used in messages and as the config group
        self._builders: dict[str, Callable] = {}
        self._base_defaults: dict[str, dict[str, Any]] = {}
        self._schemas: dict[tuple, type] = {}

    def register(self, name: str, **base_defaults: Any) -> Callable[[Callable], Callable]:
        """`base_defaults` change the defaults of the base schema's fields for this entry only."""

        def add(fn: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = fn
            self._base_defaults[name] = base_defaults
            return fn

        return add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Callable:
        if name not in self._builders:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._builders[name]

    def describe(self, name: str) -> str:
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The builder's configurable keyword-only arguments."""
        params = inspect.signature(self.get(name)).parameters.values()
        return {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def check_kwargs(self, name: str, kwargs: dict[str, Any]) -> None:
        valid = self.options(name)
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise ConfigError(
                f"{self.kind} {name!r} has no argument {unknown[0]!r}; "
                f"valid arguments: {', '.join(valid) or '(none)'}"
            )
        # create_model / build_data called from Python skip compose: check ranges and names here too.
        for key, value in kwargs.items():
            check_annotated(f"{self.kind}.{key}", value, valid[key].annotation)

    def config_schema(self, name: str, base: type | None = None) -> type:
        """A dataclass whose fields are `name` (plus `base`'s fields) and the builder's options."""
        key = (name, base)
        if key not in self._schemas:  # built once: compose() asks for it on every call
            self._schemas[key] = self._make_schema(name, base)
        return self._schemas[key]

    def _make_schema(self, name: str, base: type | None) -> type:
        # Redefining `name` in the subclass gives the base's field this option's default.
        fields: list[tuple] = [("name", str, dataclasses.field(default=name))]
        for key, value in self._base_defaults[name].items():
            fields.append((key, base.__dataclass_fields__[key].type, _field(value)))
        for p in self.options(name).values():
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"{self.kind} {name!r}: option {p.name!r} needs a default")
            fields.append((p.name, _config_type(p.annotation), _field(p.default)))
        bases = (base,) if base else ()
        return dataclasses.make_dataclass(f"{name}_{self.kind}_config", fields, bases=bases, kw_only=True)


def _field(default: Any) -> dataclasses.Field:
    if isinstance(default, (list, tuple, dict)):
        container = dict if isinstance(default, dict) else list
        return dataclasses.field(default_factory=lambda: container(default))
    return dataclasses.field(default=default)


def _config_type(annotation: Any) -> Any:
    # OmegaConf types lists but not tuples; builders may take tuples for immutable defaults.
    if annotation is inspect.Parameter.empty:
        return Any
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # keep the range (ember.ranges) beside the converted type
        return typing.Annotated[(_config_type(annotation.__origin__), *annotation.__metadata__)]
    if origin is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return list[args[0]] if args else list
    return annotation
