from ember.config.compose import CHOICES, GROUPS, compose, group_options, override_value
from ember.config.schema import DataCommon, EmberConfig, OptimConfig, RunConfig, SchedConfig, TrainerConfig

__all__ = ["CHOICES", "GROUPS", "DataCommon", "EmberConfig", "OptimConfig", "RunConfig", "SchedConfig", "TrainerConfig", "compose", "group_options", "override_value"]
