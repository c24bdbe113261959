"""ember: train, tune, track and ship PyTorch models from one config."""

__version__ = "0.1.0"

from ember.errors import EmberError  # noqa: E402

# The public API is imported on first use: `ember config` and `ember --help` should not pay
# for importing torchmetrics and the trainer.
_API = {
    "fit": "ember.api",
    "train_config": "ember.api",
    "load_run": "ember.rundir.loading",
    "evaluate_run": "ember.inspection.evaluation",
    "predict": "ember.deploy.predict",
    "Result": "ember.api",
    "load_data": "ember.api",
    "list_data": "ember.data",
    "create_model": "ember.models",
    "list_models": "ember.models",
    "register_model": "ember.models",
}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'ember' has no attribute {name!r}")


__all__ = ["EmberError", *_API]
