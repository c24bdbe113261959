from ember.config.compose import GROUPS, compose, compose_saved, compose_typed, group_options, override_value, typed
from ember.config.schema import DataCommon, EmberConfig, ModelCommon, OptimConfig, RunConfig, SchedConfig, TrainerConfig

__all__ = [
    "GROUPS",
    "DataCommon",
    "EmberConfig",
    "ModelCommon",
    "OptimConfig",
    "RunConfig",
    "SchedConfig",
    "TrainerConfig",
    "compose",
    "compose_saved",
    "compose_typed",
    "group_options",
    "override_value",
    "typed",
]
