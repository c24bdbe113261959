"""Compose a config: packaged YAML groups + registry schemas + a user file + `key=value` overrides.

Hydra's public compose API merges the group selections (ember owns its run directory and never
changes the working directory); the `key=value` overrides are applied to that with OmegaConf, by
Hydra's rules for them. Multi-line errors are turned into one-line ConfigErrors that name the
key and list the valid choices. `typed` turns the composed config into the schema's dataclasses,
which check every value; composing runs it once, and `compose_typed` hands back both: the
DictConfig (printed, saved as a run's config.yaml) and its typed twin, which training reads.
"""

import contextlib
import copy
import dataclasses
import difflib
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
    ValidationError,
)

from ember.config.schema import DataCommon, EmberConfig, ModelCommon, OptimConfig, SchedConfig
from ember.data import DATA, list_data
from ember.errors import ConfigError
from ember.models import MODELS, list_models
from ember.track import flatten
from ember.train.optim import OPTIMIZERS, SCHEDULES

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("model", "data", "optim", "sched", "trainer", "experiment")
# Keys that hold open dictionaries: any key may be set below them.
OPEN_KEYS = ("tune.space", "tune.sampler_args", "tune.pruner_args")


def group_options(group: str) -> list[str]:
    """The options of a config group: registry entries for model/data, the optimizers and schedules
    ember.train.optim builds, YAML files otherwise."""
    if group == "model":
        return list_models()
    if group == "data":
        return list_data()
    if group in ("optim", "sched"):
        return sorted(OPTIMIZERS if group == "optim" else SCHEDULES)
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# (group, name) already in Hydra's ConfigStore: storing a schema costs milliseconds, and compose()
# runs for every command and every ember.fit call, so each is stored once per process.
_STORED: set[tuple[str, str]] = set()


def _register_schemas() -> None:
    cs = ConfigStore.instance()

    def store(group: str, name: str, node) -> None:
        if (group, name) not in _STORED:
            cs.store(group=group or None, name=name, node=node())
            _STORED.add((group, name))

    store("", "ember_schema", lambda: EmberConfig)
    for name, (_, defaults) in OPTIMIZERS.items():
        store("optim", name, lambda: OmegaConf.merge(OptimConfig(), {"name": name, **defaults}))
    for name in SCHEDULES:
        store("sched", name, lambda: SchedConfig(name=name))
    for name in MODELS.names():
        store("model", name, lambda: MODELS.config_schema(name, base=ModelCommon))
    for name in DATA.names():
        store("data", name, lambda: DATA.config_schema(name, base=DataCommon))


def compose(overrides: Iterable[str] = (), config_file: str | Path | None = None) -> DictConfig:
    """The composed config; raises ConfigError naming the bad key and the valid choices."""
    return compose_typed(overrides, config_file)[0]


def compose_saved(
    saved: DictConfig, overrides: Iterable[str] = (), config_file: str | Path | None = None
) -> DictConfig:
    """A saved run's config (resume, eval, compress) with a config file and `key=value` overrides
    on top. Its values are taken as written (ember.rundir.directory.literal escaped every `${` in it)."""
    return compose_typed(overrides, config_file, saved)[0]


def compose_typed(
    overrides: Iterable[str] = (), config_file: str | Path | None = None, saved: DictConfig | None = None
) -> tuple[DictConfig, EmberConfig]:
    """What `compose` (or, given `saved`, `compose_saved`) returns, and the same config typed: the
    EmberConfig that checking it built (`typed`), so a caller that trains does not build it again."""
    return _compose(saved, overrides, config_file)


def _compose(
    saved: DictConfig | None, overrides: Iterable[str], config_file: str | Path | None
) -> tuple[DictConfig, EmberConfig]:
    """Hydra composes the group selections (the saved run's, the file's, the command line's); the
    saved config and the file's values are merged onto that with OmegaConf, then the command
    line's `key=value` overrides are applied; every value is checked, by typing the config."""
    selections, layers = [], []
    if saved is not None:
        selections += [f"model={saved.model.name}", f"data={saved.data.name}"]
        layers.append(("the saved config", saved))
    if config_file:
        file_selections, values = _file_parts(config_file)
        selections += file_selections
        layers.append((f"config file {str(config_file)!r}", values))
    overrides = _prepared(selections + list(overrides))
    _register_schemas()
    parsed = _parse(overrides)
    cfg = copy.deepcopy(_composed_groups(tuple(o.input_line for o in parsed if not _is_value_override(o))))
    for where, values in layers:
        _merge(cfg, values, where, overrides)
    for o in parsed:
        if _is_value_override(o):
            _apply(o, cfg, overrides)
    check_keys(cfg, overrides)
    return cfg, check_values(cfg)


def _merge(cfg: DictConfig, values: DictConfig, where: str, overrides: list[str]) -> None:
    """`values` merged into cfg by OmegaConf: the schema still types and limits every key."""
    try:
        with contextlib.ExitStack() as stack:
            for key in OPEN_KEYS:  # open dictionaries take new keys, as compose's `++` does
                stack.enter_context(open_dict(OmegaConf.select(cfg, key)))
            cfg.merge_with(values)
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(f"{where}: {_unknown_key_message(e.full_key, overrides)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{where}: {_translate(e, overrides)}") from None


def _prepared(overrides: list[str]) -> list[str]:
    """ember's shorthands written in Hydra's grammar; group selections checked against the options."""
    # Every group already has a default, so `+group=option` means `group=option`.
    overrides = [o.lstrip("+") if o.lstrip("+").split("=", 1)[0] in GROUPS else o for o in overrides]
    # `track=csv` and `track=csv,mlflow` mean the list `track=[csv,mlflow]`.
    overrides = [re.sub(r"^\+*track=(?!null$)([\w,]+)$", r"track=[\1]", o) for o in overrides]
    for o in overrides:
        _check_group_selection(o)
    # `+key=value` is Hydra's "add a key"; here it sets or adds (`++`), and check_keys below still
    # rejects a key that no schema declares, so `+` cannot smuggle in a typo.
    overrides = [("+" + o if re.match(r"\+[^+=]*\.", o) else o) for o in overrides]
    # Open dictionaries (a tuning space, sampler arguments) take new keys without a `+`.
    return [("++" + o.lstrip("+") if o.lstrip("+").startswith(OPEN_KEYS) else o) for o in overrides]


EXAMPLE = "for example trainer.max_epochs=5"


def _parse(overrides: list[str]) -> list[Override]:
    """Each override through Hydra's grammar, or a ConfigError quoting the whole of the one it
    rejects (Hydra's own message quotes a fragment, such as '[1' for trainer.max_epochs=[1)."""
    parser = OverridesParser.create()
    out = []
    for o in overrides:
        if o.lstrip("+~").startswith("="):
            raise ConfigError(f"cannot parse override {o!r}: it names no key; write key=value, {EXAMPLE}")
        try:
            out.append(parser.parse_override(o))
        except HydraException:  # what its grammar raises for an override it cannot parse
            raise ConfigError(f"cannot parse override {o!r}; write key=value, {EXAMPLE}") from None
        if out[-1].package is not None:  # `group@package=option` moves a group: nothing in ember reads it there
            raise ConfigError(f"cannot parse override {o!r}: ember takes no @package; write key=value or group=option")
        if out[-1].is_sweep_override():
            raise ConfigError(f"cannot parse override {o!r}: it gives several values; give one (a list: key=[1,2])")
    return out


def _is_value_override(o: Override) -> bool:
    """`key=value` (also `+`, `++`, `~`): not a group selection or a `hydra.` key."""
    return o.key_or_group not in GROUPS and o.key_or_group.split(".")[0] != "hydra"


# Hydra's compose costs ~70 ms a call (it deep-copies its whole config repository each time):
# more than training a small model, and ember.fit composes on every call. What the group
# selections compose to is cached per process, and compose applies the `key=value` overrides to a
# copy of it (_apply, by Hydra's rules for them). The key holds the number of stored schemas, so a
# model or data source registered later is seen.
_BASE: dict[tuple, DictConfig] = {}


def _composed_groups(selections: tuple[str, ...]) -> DictConfig:
    """The config the group selections compose to (cached; never hand out the cached object)."""
    key = (selections, len(_STORED))
    if key not in _BASE:
        try:
            _BASE[key] = hydra_compose_all(list(selections))
        except Exception as e:  # Hydra raises its own, OmegaConf's and plain ValueErrors for a bad selection
            raise _translate(e, list(selections)) from None
    return _BASE[key]


def hydra_compose_all(overrides: list[str]) -> DictConfig:
    """Hydra's own compose of the packaged config with these overrides (no checks of ember's)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="ember"):
            return hydra_compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _apply(o: Override, cfg: DictConfig, overrides: list[str]) -> None:
    """One `key=value`, `+key=value`, `++key=value` or `~key` by the rules Hydra's compose applies
    once the groups are merged (tests/config compares the two), through OmegaConf's public API."""
    key, value = o.key_or_group, o.value()
    try:
        if o.is_delete():
            _delete(cfg, key, value, overrides)
        elif o.is_add() and not isinstance(value, (dict, list)) and OmegaConf.select(cfg, key) is not None:
            raise ConfigError(f"{key} already has a value; set it with {o.input_line.lstrip('+')}")
        else:
            OmegaConf.update(cfg, key, value, merge=True, force_add=o.is_add() or o.is_force_add())
    except (ConfigKeyError, ConfigAttributeError) as e:
        raise ConfigError(_unknown_key_message(e.full_key or key, overrides)) from None
    except OmegaConfBaseException as e:
        raise _translate(e, overrides) from None


def _delete(cfg: DictConfig, key: str, value: Any, overrides: list[str]) -> None:
    """`~key` removes the key; `~key=value` only where it holds that value."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig) or leaf not in node:
        raise ConfigError(_unknown_key_message(key, overrides))
    current = node[leaf]
    if current is None:  # Hydra's rule: nothing to delete
        raise ConfigError(f"cannot delete {key}: it is already null")
    if value is not None and value != current:
        raise ConfigError(f"cannot delete {key}={value!r}: {key} is {current!r}")
    with open_dict(cfg):
        del node[leaf]


def _translate(e: Exception, overrides: list[str]) -> ConfigError:
    """A failed composition as one line, from OmegaConf's exception fields (the key, the value)."""
    cause = e
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        return ConfigError(_unknown_key_message(key, overrides))
    if isinstance(cause, ValidationError) and key:
        return ConfigError(f"{key}={cause.value!r} has the wrong type; expected {_expected_type(cause)}")
    text = str(cause).strip()
    return ConfigError(text.splitlines()[0] if text else type(cause).__name__)


def check_values(cfg: DictConfig) -> EmberConfig:
    """Every value valid: the model and data are registered, and the config builds its dataclasses
    (returned: the typed config)."""
    for key in ("model", "data"):
        name = cfg[key].name
        if name not in group_options(key):
            raise ConfigError(f"{key}.name={name!r} is unknown; choose one of: {', '.join(group_options(key))}")
    try:
        return typed(cfg)
    except InterpolationResolutionError as e:  # `${...}` naming a key or resolver that is not there
        raise ConfigError(f"cannot resolve {e.full_key}: {str(e).splitlines()[0]}") from None


def typed(cfg: DictConfig) -> EmberConfig:
    """The config as the schema's dataclasses (model and data as their builders' schemas), each
    checked as it is built: ranges, fixed sets of values, and the checks across a group's keys.
    Training builds it once (`compose_typed`, or `ember.api.train` from a DictConfig) and reads
    only this; the DictConfig is kept to print, save as config.yaml, compare on resume and turn
    into overrides."""
    return OmegaConf.to_object(cfg)


def _check_group_selection(override: str) -> None:
    m = re.fullmatch(r"\+*(model|data)\.name=(.*)", override)
    if m:
        raise ConfigError(f"select the {m.group(1)} with {m.group(1)}={m.group(2)}, not {override}")
    m = re.fullmatch(r"([a-z_]+)=(.*)", override)
    if m and m.group(1) in GROUPS:
        group, option = m.groups()
        options = group_options(group)
        if option not in options and not (group == "experiment" and option == "null"):
            raise ConfigError(f"unknown {group} {option!r}; choose one of: {', '.join(options)}")


def _expected_type(error: ValidationError) -> str:
    """The type the schema declares for the key (or list item) a ValidationError names."""
    if dataclasses.is_dataclass(error.object_type):
        declared = typing.get_type_hints(error.object_type).get(error.key)  # Annotated[...] comes back plain
    else:  # an item of a typed list, such as optim.betas[0]
        declared = next(iter(typing.get_args(error.ref_type)), None)
    kind = next((a for a in typing.get_args(declared) if a is not type(None)), declared)  # Optional[int] -> int
    return {bool: "true or false", int: "integer", float: "float", str: "text"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def _schemas(cfg: DictConfig) -> dict[str, type]:
    """The dataclass of each group of the config: the selected builder's for model and data."""
    groups = {
        name: f.default_factory
        for name, f in EmberConfig.__dataclass_fields__.items()
        if dataclasses.is_dataclass(f.default_factory)
    }
    return {
        **groups,
        "model": MODELS.config_schema(cfg.model.name, base=ModelCommon),
        "data": DATA.config_schema(cfg.data.name, base=DataCommon),
    }


def check_keys(cfg: DictConfig, overrides: list[str]) -> None:
    """Reject keys that `+key=value` added but no schema knows."""
    schemas = _schemas(cfg)
    for name, node in cfg.items():
        if name not in EmberConfig.__dataclass_fields__:
            raise ConfigError(_unknown_key_message(str(name), overrides))
        if isinstance(node, DictConfig):
            schema = schemas[name]
            for key in node:
                if key not in schema.__dataclass_fields__:
                    raise ConfigError(_unknown_key_message(f"{name}.{key}", overrides))


def _valid_keys(parent: str, overrides: list[str]) -> list[str]:
    if parent in ("model", "data"):
        # The selected option's keys: compose again without the key overrides of that group.
        kept = [o for o in overrides if not re.match(rf"\+*{parent}\.", o)]
        try:
            return [str(k) for k in compose(kept)[parent].keys()]
        except ConfigError:
            return []
    root = OmegaConf.structured(EmberConfig)
    node = OmegaConf.select(root, parent) if parent else root
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def _unknown_key_message(full_key: str, overrides: list[str]) -> str:
    parent, _, leaf = full_key.rpartition(".")
    valid = _valid_keys(parent, overrides)
    hint = difflib.get_close_matches(leaf, valid, n=1)
    did_you_mean = f"did you mean {parent + '.' if parent else ''}{hint[0]}? " if hint else ""
    where = f"of {parent}" if parent else "at the top level"
    return f"unknown key {full_key!r}; {did_you_mean}valid keys {where}: {', '.join(valid)}"


def _read_file(path: str | Path) -> dict:
    """A user YAML file's mapping, or a one-line ConfigError saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a YAML file to --config")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return content


def _file_parts(path: str | Path) -> tuple[list[str], DictConfig]:
    """A user YAML file as group selections (`model: mlp`, or a saved config.yaml's `model: {name:
    mlp, ...}`) and the values to merge (`trainer.max_epochs: 5` written out as nested keys)."""
    selections, values = [], OmegaConf.create({})
    for key, value in _read_file(path).items():
        if key in GROUPS and isinstance(value, dict) and isinstance(value.get("name"), str):
            selections.append(f"{key}={value['name']}")
            value = {k: v for k, v in value.items() if k != "name"}
        elif key in GROUPS and isinstance(value, str):
            selections.append(f"{key}={value}")
            continue
        # Dotted keys at any depth are nested keys (`optim.lr: 0.1`, `space: {optim.lr: ...}`).
        for dotted, leaf in flatten({key: value}).items():
            OmegaConf.update(values, dotted, leaf, merge=True)
    return selections, values


def file_overrides(path: str | Path) -> list[str]:
    """A user YAML file as overrides (what `ember tune` keeps to rerun its trials' command):
    `model: mlp` selects an option, nested keys set values."""
    content = _read_file(path)
    out: list[str] = []
    for key, value in content.items():
        if key in GROUPS and isinstance(value, str):
            out.insert(0, f"{key}={value}")  # group selections first, values after
        elif key in GROUPS and isinstance(value, dict) and isinstance(value.get("name"), str):
            # A saved config.yaml: `model: {name: mlp, width: 64}` selects mlp, then sets its keys.
            out.insert(0, f"{key}={value['name']}")
            out += [
                f"{k}={override_value(v)}"
                for k, v in flatten({k: v for k, v in value.items() if k != "name"}, f"{key}.").items()
            ]
        else:
            out += [f"{k}={override_value(v)}" for k, v in flatten({key: value}).items()]
    return out


def override_value(v: Any) -> str:
    """A Python value written in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{override_value(x)}" for k, x in v.items()) + "}"
    return _quoted(str(v))


def _quoted(s: str) -> str:
    """`s` in single quotes: in Hydra's grammar a backslash is literal except before a quote or
    the closing quote, where backslashes come doubled and one more escapes it."""
    s = re.sub(r"(\\*)(')", lambda m: m.group(1) * 2 + "\\" + m.group(2), s)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, s) + "'"
