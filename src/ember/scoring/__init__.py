"""Scoring, in the data's own units: the metrics per task (`metrics`, `regression`), the units at
a model's edges (`units`), the baselines every run is scored beside (`baselines`) and forecasts
rolled out over many leads (`rollout`)."""
