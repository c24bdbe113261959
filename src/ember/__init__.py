"""ember: train, tune, track and ship PyTorch models from one config."""

__version__ = "0.1.0"

from ember.api import Result, evaluate_run, fit, load_run, train  # noqa: E402
from ember.data import list_data, load_data  # noqa: E402
from ember.errors import EmberError  # noqa: E402
from ember.models import create_model, list_models, register_model  # noqa: E402

__all__ = ["EmberError", "Result", "create_model", "evaluate_run", "fit", "list_data", "list_models", "load_data", "load_run", "register_model", "train"]
