from ember.config.compose import CHOICES, GROUPS, compose, group_options, override_value
from ember.config.schema import DataCommon, EmberConfig, ModelCommon, OptimConfig, RunConfig, SchedConfig, TrainerConfig

__all__ = ["CHOICES", "GROUPS", "DataCommon", "EmberConfig", "ModelCommon", "OptimConfig", "RunConfig", "SchedConfig", "TrainerConfig", "compose", "group_options", "override_value"]
