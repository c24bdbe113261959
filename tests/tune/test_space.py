"""The search space: entries, their errors, and validation against the composed config."""

import optuna.distributions as D
import pytest

from ember.errors import ConfigError
from ember.tune.space import grid, parse_space, to_overrides, validate

BASE = ["model=mlp", "data.num_samples=500"]


def test_dotted_and_nested_keys_give_the_same_space():
    dotted = parse_space(
        {
            "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "model.width": {"type": "int", "low": 16, "high": 256, "step": 16},
        }
    )
    nested = parse_space(
        {
            "optim": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
            "model": {"width": {"type": "int", "low": 16, "high": 256, "step": 16}},
        }
    )
    assert [(p.key, p.distribution) for p in dotted] == [(p.key, p.distribution) for p in nested]
    assert dotted[0].distribution == D.FloatDistribution(1e-4, 1e-1, log=True)
    assert dotted[1].distribution == D.IntDistribution(16, 256, step=16)


@pytest.mark.parametrize(
    "space, message",
    [
        ({}, "tune.space is empty"),
        (
            {"optim.lr": {"type": "loguniform", "low": 1, "high": 2}},
            "unknown type 'loguniform'; use one of: float, int, categorical",
        ),
        ({"optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low=0.1 is above high=0.01"),
        ({"optim.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log=true needs low > 0"),
        ({"optim.lr": {"type": "float", "high": 0.1}}, "needs low and high"),
        ({"optim.lr": {"type": "float", "low": 0.1, "hi": 0.2}}, "unknown field 'hi'"),
        ({"model.width": {"type": "int", "low": 1.5, "high": 8}}, "low=1.5 must be an integer"),
        (
            {"model.width": {"type": "int", "low": 1, "high": 8, "step": 2, "log": True}},
            "step and log=true cannot be combined",
        ),
        ({"optim.name": {"type": "categorical", "choices": []}}, "non-empty list of choices"),
        ({"optim.lr": 0.1}, "must be a mapping"),
    ],
)
def test_bad_entries_are_one_line_errors(space, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_space(space)


def test_unknown_key_is_an_error_naming_the_valid_keys():
    params = parse_space({"optim.lrr": {"type": "float", "low": 1e-4, "high": 1e-1}})
    with pytest.raises(
        ConfigError, match=r"tune.space.optim.lrr: the config has no key 'optim.lrr'; valid keys of optim: name, lr"
    ):
        validate(params, BASE)
    with pytest.raises(ConfigError, match="tune.space.run: run is a section of the config"):
        validate(parse_space({"run": {"type": "float", "low": 0.0, "high": 1.0}}), BASE)
    with pytest.raises(ConfigError, match=r"tune.space.optim picks the optim option: make it \{type: categorical"):
        validate(parse_space({"optim": {"type": "float", "low": 0.0, "high": 1.0}}), BASE)


def test_values_that_do_not_compose_are_found_before_any_trial():
    # model.width is an int: a float range composes into a type error at its first value.
    with pytest.raises(ConfigError, match="tune.space does not compose with model.width=16.5.*model.width"):
        validate(parse_space({"model.width": {"type": "float", "low": 16.5, "high": 64}}), BASE)
    # cnn1d has no width: the second choice of model does not take model.width.
    space = {
        "model": {"type": "categorical", "choices": ["mlp", "cnn1d"]},
        "model.width": {"type": "int", "low": 8, "high": 16},
    }
    with pytest.raises(ConfigError, match="model=cnn1d.*unknown key 'model.width'"):
        validate(parse_space(space), BASE)
    with pytest.raises(
        ConfigError, match="tune.space.optim.name: 'adamx' is not a optim option; choose among: adam, adamw"
    ):
        validate(parse_space({"optim.name": {"type": "categorical", "choices": ["adam", "adamx"]}}), BASE)


def test_group_keys_select_options_first():
    params = parse_space(
        {
            "optim.lr": {"type": "float", "low": 0.001, "high": 0.1},
            "optim.name": {"type": "categorical", "choices": ["adam", "sgd"]},
        }
    )
    validate(params, BASE)
    assert to_overrides(params, {"optim.lr": 0.01, "optim.name": "sgd"}) == ["optim=sgd", "optim.lr=0.01"]


def test_grid_values():
    params = parse_space(
        {
            "a": {"type": "int", "low": 16, "high": 64, "step": 16},
            "b": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.25},
            "c": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "d": {"type": "categorical", "choices": ["x", "y"]},
        }
    )
    g = grid(params, points=3)
    assert g["a"] == [16, 32, 48, 64] and g["b"] == [0.0, 0.25, 0.5] and g["d"] == ["x", "y"]
    assert g["c"] == pytest.approx([1e-4, 1e-3, 1e-2])
