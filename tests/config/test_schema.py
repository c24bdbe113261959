"""The schema's dataclasses: fixed sets of names from their owners, checks beside their fields,
one default per key."""

import pytest
from omegaconf import OmegaConf

from ember.config import compose, group_options, typed
from ember.config.compose import CONF_DIR
from ember.config.schema import DataCommon, EmberConfig, OptimConfig, RunConfig, SchedConfig, TrainerConfig, TuneConfig
from ember.data.checks import NAN_POLICIES
from ember.errors import ConfigError
from ember.ranges import choices_of
from ember.track import TRACKERS
from ember.train.losses import LOSSES
from ember.train.optim import OPTIMIZERS, SCHEDULES
from ember.train.strategy import STRATEGIES


def _choices(schema: type, key: str) -> tuple[str, ...]:
    return choices_of(schema.__dataclass_fields__[key].type).names


def test_fixed_sets_of_names_come_from_the_code_that_acts_on_them():
    assert _choices(OptimConfig, "name") == tuple(sorted(OPTIMIZERS))
    assert _choices(SchedConfig, "name") == SCHEDULES
    assert _choices(TrainerConfig, "loss") == LOSSES
    assert _choices(TrainerConfig, "strategy") == STRATEGIES
    assert _choices(DataCommon, "nan") == NAN_POLICIES
    assert _choices(EmberConfig, "track") == TRACKERS
    # The sched group's options are the schedules build_scheduler makes, not a folder of YAML files.
    assert group_options("sched") == sorted(SCHEDULES)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.strategy=ddpp",
            r"^trainer.strategy='ddpp' is not a valid choice; did you mean ddp\? choose one of: auto, ddp, fsdp$",
        ),
        (
            "trainer.loss=mse2",
            (
                r"^trainer.loss='mse2' is not a valid choice; did you mean mse\? choose one of: auto, cross_entropy, "
                r"nll, mse, l1, mae, huber, rel_l2, h1$"
            ),
        ),
        (
            "trainer.nan_policy=ignore",
            r"^trainer.nan_policy='ignore' is not a valid choice; choose one of: stop, skip, off$",
        ),
        (
            "trainer.progress=quiet",
            r"^trainer.progress='quiet' is not a valid choice; choose one of: auto, bar, lines, none$",
        ),
        ("data.nan=keep", r"^data.nan='keep' is not a valid choice; choose one of: error, drop$"),
        (
            "sched.name=linear",
            r"^sched.name='linear' is not a valid choice; choose one of: none, step, cosine, plateau, onecycle$",
        ),
        (
            "track=[csv,tensorbord]",
            (
                r"^track='tensorbord' is not a valid choice; did you mean tensorboard\? choose one of: "
                r"tensorboard, mlflow, wandb, csv$"
            ),
        ),
    ],
)
def test_a_name_outside_its_set_is_one_line_naming_the_valid_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


def test_the_dataclasses_check_themselves_when_built_from_python():
    with pytest.raises(ConfigError, match=r"trainer.strategy='ring' is not a valid choice"):
        TrainerConfig(strategy="ring")
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=0 is out of range: it must be >= 1"):
        TrainerConfig(max_epochs=0)
    assert TrainerConfig(strategy="fsdp", max_epochs=3).strategy == "fsdp"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: OptimConfig(betas=[0.9]), r"optim.betas=\[0.9\] must hold two values"),
        (
            lambda: DataCommon(name="csv", val_fraction=0.6, test_fraction=0.4),
            r"data.val_fraction=0.6 and data.test_fraction=0.4 leave no training data",
        ),
        (
            lambda: TrainerConfig(device="gpu"),
            r"trainer.device='gpu' is not a device; use auto, cpu, cuda, cuda:N or mps",
        ),
        (lambda: RunConfig(name="a/b"), r"run.name='a/b' is not a plain folder name"),
        (lambda: TuneConfig(name=".."), r"tune.name='..' is not a plain folder name"),
    ],
)
def test_checks_across_keys_live_in_the_dataclass_that_owns_them(build, message):
    with pytest.raises(ConfigError, match=message) as info:
        build()
    assert "\n" not in str(info.value)
    # Values just inside each check build.
    OptimConfig(betas=[0.8, 0.9])
    DataCommon(name="csv", val_fraction=0.5, test_fraction=0.4)
    TrainerConfig(device="cuda:1")


def test_each_key_has_one_default_in_the_schema():
    cfg = typed(compose())
    # The default option of trainer sets nothing: the schema's default is the default job's.
    assert cfg.trainer == TrainerConfig()
    assert cfg.trainer.max_epochs == 20  # what docs/ and README say the default run trains
    assert cfg.sched == SchedConfig(name="onecycle")
    assert cfg.run == RunConfig() and cfg.tune == TuneConfig()
    assert not OmegaConf.load(CONF_DIR / "trainer" / "default.yaml")
