"""The commands that read a model or a run and show it: `ember summary` (`model_summary`),
`ember graph`, `ember sample`, `ember profile` and `ember eval` (`evaluation`)."""
