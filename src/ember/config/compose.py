"""Compose a config: packaged YAML groups + registry schemas + a user file + `key=value` overrides.

Hydra's compose API does the composition (ember owns its run directory and never changes the
working directory). Hydra's multi-line errors are turned into one-line ConfigErrors that name the
key and list the valid choices.
"""

import copy
import dataclasses
import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ember.config.schema import DataCommon, EmberConfig, ModelCommon, OptimConfig
from ember.errors import ConfigError
from ember.ranges import check_ranges

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("model", "data", "optim", "sched", "trainer", "experiment")
# Keys that hold open dictionaries: any key may be set below them.
OPEN_KEYS = ("tune.space", "tune.sampler_args", "tune.pruner_args")

# Keys whose values come from a fixed set (optim.name and sched.name: their groups' options).
CHOICES = {
    "trainer.precision": ("auto", "fp32", "bf16", "fp16"),
    "trainer.loss": ("auto", "cross_entropy", "nll", "mse", "l1", "mae", "huber", "rel_l2", "h1"),
    "trainer.mode": ("auto", "min", "max"),
    "trainer.progress": ("auto", "bar", "lines", "none"),
    "trainer.nan_policy": ("stop", "skip", "off"),
    "data.split": ("train", "val", "test"),
    "data.nan": ("error", "drop"),
}


def group_options(group: str) -> list[str]:
    """The options of a config group: registry entries for model/data, YAML files otherwise."""
    from ember.data import list_data
    from ember.models import list_models

    if group == "model":
        return list_models()
    if group == "data":
        return list_data()
    if group == "optim":
        from ember.train.optim import OPTIMIZERS

        return sorted(OPTIMIZERS)
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# (group, name) already in Hydra's ConfigStore: storing a schema costs milliseconds, and compose()
# runs for every command and every ember.fit call, so each is stored once per process.
_STORED: set[tuple[str, str]] = set()


def _register_schemas() -> None:
    from ember.data import DATA
    from ember.models import MODELS
    from ember.train.optim import OPTIMIZERS

    cs = ConfigStore.instance()

    def store(group: str, name: str, node) -> None:
        if (group, name) not in _STORED:
            cs.store(group=group or None, name=name, node=node())
            _STORED.add((group, name))

    store("", "ember_schema", lambda: EmberConfig)
    for name, (_, defaults) in OPTIMIZERS.items():
        store("optim", name, lambda: OmegaConf.merge(OptimConfig(), {"name": name, **defaults}))
    for name in MODELS.names():
        store("model", name, lambda: MODELS.config_schema(name, base=ModelCommon))
    for name in DATA.names():
        store("data", name, lambda: DATA.config_schema(name, base=DataCommon))


def compose(overrides: Iterable[str] = (), config_file: str | Path | None = None) -> DictConfig:
    """The composed config; raises ConfigError naming the bad key and the valid choices."""
    overrides = (file_overrides(config_file) if config_file else []) + list(overrides)
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
    overrides = [("++" + o.lstrip("+") if o.lstrip("+").startswith(OPEN_KEYS) else o) for o in overrides]
    _register_schemas()
    try:
        cfg = _compose_cached(overrides)
    except Exception as e:  # Hydra wraps everything; only config mistakes are translated
        raise _translate(e, overrides) from None
    check_keys(cfg, overrides)
    check_values(cfg)
    return cfg


# Hydra's compose costs ~70 ms a call (it deep-copies its whole config repository each time):
# more than training a small model, and ember.fit composes on every call. What the group
# selections compose to is cached per process; the `key=value` overrides are applied to a copy
# of it by Hydra's own step for them (the one its compose runs after the groups are merged), so
# the result and the error messages are Hydra's (that step is private to Hydra: a test compares
# the two ways on every kind of override). The key holds the number of stored schemas, so a model
# or data source registered later is seen.
_BASE: dict[tuple, DictConfig] = {}


def _compose_cached(overrides: list[str]) -> DictConfig:
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        apply = ConfigLoaderImpl._apply_overrides_to_config
    except (ImportError, AttributeError):  # a Hydra without that step: compose the slow way
        return _hydra_compose(overrides)
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    values = [o for o in parsed if _is_value_override(o)]
    selections = tuple(o.input_line for o in parsed if not _is_value_override(o))
    key = (selections, len(_STORED))
    if key not in _BASE:
        _BASE[key] = _hydra_compose(list(selections))
    cfg = copy.deepcopy(_BASE[key])
    apply(values, cfg)
    return cfg


def _is_value_override(o) -> bool:
    """`key=value` (also `+`, `++`, `~`): not a group selection, a sweep or a `hydra.` key."""
    return o.package is None and not o.is_sweep_override() and o.key_or_group not in GROUPS and o.key_or_group.split(".")[0] != "hydra"


def _hydra_compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None, job_name="ember"):
            return hydra_compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def check_values(cfg: DictConfig) -> None:
    choices_of = {**CHOICES, "optim.name": group_options("optim"), "sched.name": group_options("sched")}
    for key, choices in choices_of.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and value not in choices:
            raise ConfigError(f"{key}={value!r} is not a valid choice; choose one of: {', '.join(choices)}")
    from ember.track import TRACKERS

    for name in cfg.get("track") or []:
        if name not in TRACKERS:
            hint = difflib.get_close_matches(str(name), TRACKERS, n=1)
            raise ConfigError(f"track: unknown tracker {name!r}; {'did you mean ' + hint[0] + '? ' if hint else ''}choose from: {', '.join(TRACKERS)} (for example track=[tensorboard,csv])")
    device = cfg.trainer.device
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"trainer.device={device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    for key in ("model", "data"):
        name = cfg[key].name
        if name not in group_options(key):
            raise ConfigError(f"{key}.name={name!r} is unknown; choose one of: {', '.join(group_options(key))}")
    _check_names(cfg)
    for name, schema in _schemas(cfg).items():
        check_ranges(cfg[name], schema, name)
    if len(cfg.optim.betas) != 2:  # a range checks each item, not how many there are
        raise ConfigError(f"optim.betas={list(cfg.optim.betas)} must hold two values, for example optim.betas=[0.9,0.999]")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError(f"data.val_fraction={cfg.data.val_fraction} and data.test_fraction={cfg.data.test_fraction} leave no training data; their sum must be below 1")


def _check_names(cfg: DictConfig) -> None:
    """run.name and tune.name become one folder under run.root: a separator, `..` or an absolute
    name would put the run (or study) elsewhere on disk, so they are refused before anything is made."""
    for key in ("run.name", "tune.name"):
        name = OmegaConf.select(cfg, key)
        if name is not None and ("/" in str(name) or "\\" in str(name) or str(name) in (".", "..")):
            raise ConfigError(f"{key}={name!r} is not a plain folder name (no /, \\, .. or absolute path); name it like my-experiment, or set run.dir= for an exact directory")


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


def _translate(e: Exception, overrides: list[str]) -> Exception:
    cause = e
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    text = str(cause)
    key = getattr(cause, "full_key", None) or ""
    m = re.search(r"Could not override '([^']+)'", str(e))
    if not key and not m and any(o.lstrip("+~").startswith("=") for o in overrides):
        bad = next(o for o in overrides if o.lstrip("+~").startswith("="))
        return ConfigError(f"cannot parse override {bad!r}: it names no key; write key=value, for example trainer.max_epochs=5")
    if m or re.search(r"Key '[^']+' (is )?not in", text) or "Missing key" in text:
        return ConfigError(_unknown_key_message(key or m.group(1), overrides))
    m = re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    if m:
        return ConfigError(f"{key}={m.group(1)!r} has the wrong type; expected {m.group(2).lower()}")
    m = re.search(r"Value '(.*?)' is not a valid bool", text)
    if m:
        return ConfigError(f"{key}={m.group(1)!r} has the wrong type; expected true or false")
    if isinstance(cause, OmegaConfBaseException):
        first = text.splitlines()[0]
        return ConfigError(f"{key}: {first}" if key else first)
    text = str(e)
    if "Error parsing override" in text or "mismatched input" in text or "no viable alternative" in text:
        bad = next((o for o in overrides if o in text), None) or _first_unparsable(overrides)
        return ConfigError(f"cannot parse override {bad!r}; write key=value, for example trainer.max_epochs=5")
    return ConfigError(text.strip().splitlines()[0] if text.strip() else type(e).__name__)


def _first_unparsable(overrides: list[str]) -> str | None:
    """The override Hydra's grammar rejects, found one by one (its message quotes only a fragment,
    such as '[1' for trainer.max_epochs=[1)."""
    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_override(o)
        except HydraException:  # what its grammar raises for an override it cannot parse
            return o
    return None


def _schemas(cfg: DictConfig) -> dict[str, type]:
    """The dataclass of each group of the config: the selected builder's for model and data."""
    from ember.data import DATA
    from ember.models import MODELS

    groups = {name: f.default_factory for name, f in EmberConfig.__dataclass_fields__.items() if dataclasses.is_dataclass(f.default_factory)}
    return {**groups, "model": MODELS.config_schema(cfg.model.name, base=ModelCommon), "data": DATA.config_schema(cfg.data.name, base=DataCommon)}


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


def file_overrides(path: str | Path) -> list[str]:
    """A user YAML file as overrides: `model: mlp` selects an option, nested keys set values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a YAML file to --config")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
    out: list[str] = []
    for key, value in content.items():
        if key in GROUPS and isinstance(value, str):
            out.insert(0, f"{key}={value}")  # group selections first, values after
        elif key in GROUPS and isinstance(value, dict) and isinstance(value.get("name"), str):
            # A saved config.yaml: `model: {name: mlp, width: 64}` selects mlp, then sets its keys.
            out.insert(0, f"{key}={value['name']}")
            out += [f"{k}={override_value(v)}" for k, v in _flatten(key, {k: v for k, v in value.items() if k != "name"})]
        else:
            out += [f"{k}={override_value(v)}" for k, v in _flatten(key, value)]
    return out


def _flatten(prefix: str, value: Any):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}", v)
    else:
        yield prefix, value


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
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def config_as_overrides(cfg: DictConfig) -> list[str]:
    """A saved config as overrides, so it composes (and validates) like the original command."""
    out = [f"model={cfg.model.name}", f"data={cfg.data.name}"]
    container = OmegaConf.to_container(cfg)
    for group, node in container.items():
        if isinstance(node, dict):
            out += [f"{group}.{k}={override_value(v)}" for k, v in node.items() if k != "name" or group not in ("model", "data")]
        else:
            out.append(f"{group}={override_value(node)}")
    return out
