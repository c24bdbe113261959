import dataclasses
import typing

import pytest

from ember.config import GROUPS, compose, group_options
from ember.config.schema import DataCommon, EmberConfig, ModelCommon
from ember.data import DATA
from ember.errors import ConfigError
from ember.models import MODELS
from ember.ranges import AT_LEAST_1, FRACTION, POSITIVE, Range, check_value, range_of

# Numeric keys that may take any finite value: a range for them would only forbid real settings.
# level: coordinate values (hPa, m), any sign
UNBOUNDED = {"p_mean", "slope", "intercept", "forcing", "fill_value", "level"}


def _numeric(annotation) -> bool:
    inner = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    types = set(typing.get_args(inner)) or {inner}
    return bool(types & {int, float}) and bool not in types


def _numeric_keys():
    for group, f in EmberConfig.__dataclass_fields__.items():
        if dataclasses.is_dataclass(f.default_factory):
            yield from ((f"{group}.{g.name}", g.type) for g in dataclasses.fields(f.default_factory))
    yield from ((f"data.{g.name}", g.type) for g in dataclasses.fields(DataCommon))
    yield from ((f"model.{g.name}", g.type) for g in dataclasses.fields(ModelCommon))
    for registry in (MODELS, DATA):
        for name in registry.names():
            yield from ((f"{registry.kind}={name} {p.name}", p.annotation) for p in registry.options(name).values())


def test_every_numeric_key_has_a_range_beside_it():
    missing = [
        key
        for key, annotation in _numeric_keys()
        if _numeric(annotation) and range_of(annotation) is None and key.split(".")[-1].split()[-1] not in UNBOUNDED
    ]
    assert not missing, (
        f"give these keys a range (Annotated[int, AT_LEAST_1], ...) or list them in UNBOUNDED: {missing}"
    )


@pytest.mark.parametrize(
    ("valid", "inside", "outside", "shown"),
    [
        (POSITIVE, [1e-9, 5], [0, -1, float("inf"), float("nan")], "> 0"),
        (AT_LEAST_1, [1, 10**6], [0, -3], ">= 1"),
        (FRACTION, [0, 0.999], [1, -0.1], "in [0, 1)"),
        (Range(0, 1, low_open=True), [1, 0.5], [0, 1.5], "in (0, 1]"),
    ],
)
def test_range_holds_its_bounds(valid, inside, outside, shown):
    assert all(v in valid for v in inside)
    assert not any(v in valid for v in outside)
    assert str(valid) == shown


def test_a_list_is_checked_item_by_item():
    check_value("optim.betas", [0.9, 0.999], FRACTION)
    with pytest.raises(ConfigError, match=r"optim.betas=\[0.9, 1.5\] is out of range: each item must be in \[0, 1\)"):
        check_value("optim.betas", [0.9, 1.5], FRACTION)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=-0.1"], r"optim.lr=-0.1 is out of range: it must be >= 0"),
        (["optim.betas=[0.9,1.0]"], r"optim.betas=\[0.9, 1.0\] is out of range"),
        (["optim.betas=[0.9]"], r"optim.betas=\[0.9\] must hold two values"),
        (["optim.eps=0"], r"optim.eps=0.0 is out of range: it must be > 0"),
        (["optim=sgd", "optim.momentum=-0.5"], r"optim.momentum=-0.5 is out of range"),
        (["optim.weight_decay=-1"], r"optim.weight_decay=-1.0 is out of range: it must be >= 0"),
        (["sched=onecycle", "sched.pct_start=1.5"], r"sched.pct_start=1.5 is out of range: it must be in \(0, 1\)"),
        (["sched.warmup_steps=-5"], r"sched.warmup_steps=-5 is out of range"),
        (["trainer.label_smoothing=1.5"], r"trainer.label_smoothing=1.5 is out of range: it must be in \[0, 1\]"),
        (["trainer.max_epochs=0"], r"trainer.max_epochs=0 is out of range: it must be >= 1"),
        (["trainer.seed=-1"], r"trainer.seed=-1 is out of range"),
        (["data.val_fraction=1.0"], r"data.val_fraction=1.0 is out of range: it must be in \[0, 1\)"),
        (["data.val_fraction=0.5", "data.test_fraction=0.5"], r"leave no training data; their sum must be below 1"),
        (["data.eval_batch_size=0"], r"data.eval_batch_size=0 is out of range"),
        (["data.num_samples=0"], r"data.num_samples=0 is out of range: it must be >= 1"),
        (["model.dropout=1.5"], r"model.dropout=1.5 is out of range: it must be in \[0, 1\)"),
        (["model=mlp", "model.width=0"], r"model.width=0 is out of range: it must be >= 1"),
        (["model=gru", "model.layers=0"], r"model.layers=0 is out of range"),
        (["model=vit", "data=digits", "model.heads=0"], r"model.heads=0 is out of range"),
        (["tune.trials=0"], r"tune.trials=0 is out of range"),
    ],
)
def test_out_of_range_values_fail_at_compose_naming_key_value_and_range(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        compose(overrides)
    assert "\n" not in str(info.value)


def test_unset_optional_keys_and_defaults_are_in_range():
    cfg = compose(["model=vit", "data=digits"])  # vit's dim, depth, heads are null until sized
    assert cfg.model.dim is None
    for group in GROUPS:  # every option's own defaults and every experiment's values
        for option in group_options(group):
            assert compose([f"{group}={option}"]) is not None


def test_create_model_from_python_checks_ranges_too():
    from ember.models import create_model, example_spec

    with pytest.raises(ConfigError, match=r"model.width=0 is out of range: it must be >= 1"):
        create_model("mlp", example_spec("mlp"), width=0)


def test_check_choice_names_the_key_the_nearest_name_and_all_of_them():
    from ember.ranges import check_choice

    assert check_choice("model.norm", "batch", ("batch", "layer")) == "batch"
    with pytest.raises(
        ConfigError,
        match=r"^model.norm='bach' is not a valid choice; did you mean batch\? choose one of: batch, layer$",
    ):
        check_choice("model.norm", "bach", ("batch", "layer"))
    with pytest.raises(ConfigError, match=r"^model.norm='x' is not a valid choice; choose one of: batch, layer$"):
        check_choice("model.norm", "x", ("batch", "layer"))


def test_one_of_is_found_in_the_annotation_like_a_range():
    from typing import Annotated, Optional

    from ember.ranges import OneOf, choices_of

    assert choices_of(Annotated[str, OneOf({"a": 1, "b": 2})]).names == ("a", "b")
    assert choices_of(Optional[Annotated[str, OneOf(["x"])]]).names == ("x",)
    assert choices_of(str) is None and choices_of(Annotated[int, AT_LEAST_1]) is None


def test_a_builders_set_of_names_is_checked_at_compose_and_from_python():
    from typing import Annotated

    from ember.config.schema import ModelCommon
    from ember.ranges import OneOf, check_fields
    from ember.registry import Registry

    registry = Registry("model")

    @registry.register("toy")
    def toy(spec, *, norm: Annotated[str, OneOf(("batch", "layer"))] = "batch"):
        return norm

    with pytest.raises(
        ConfigError,
        match=r"^model.norm='bach' is not a valid choice; did you mean batch\? choose one of: batch, layer$",
    ):
        registry.check_kwargs("toy", {"norm": "bach"})
    registry.check_kwargs("toy", {"norm": "layer"})
    schema = registry.config_schema("toy", base=ModelCommon)  # what compose builds from the signature
    with pytest.raises(ConfigError, match=r"^model.norm='group' is not a valid choice"):
        schema(norm="group")
    check_fields(schema(norm="layer"), "model")
