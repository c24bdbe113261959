"""Evaluation metrics per task, on torchmetrics."""

import torch

from ember.data.spec import DataSpec


def build_metrics(spec: DataSpec):
    """A torchmetrics MetricCollection for the task."""
    # Imported here: torchmetrics pulls in scipy.signal, ~1 s that a config error or `--help` need not wait for.
    import torchmetrics as tm
    from torchmetrics import MetricCollection

    if spec.task == "classification":
        k = spec.num_classes
        metrics = {
            "accuracy": tm.Accuracy(task="multiclass", num_classes=k),
            "f1": tm.F1Score(task="multiclass", num_classes=k, average="macro"),
        }
        if k > 5:
            metrics["top5"] = tm.Accuracy(task="multiclass", num_classes=k, top_k=5)
        return MetricCollection(metrics)
    # Regression values are pooled over every output element: MSE and MAE equal the mean of the
    # per-output values, RMSE is the root of the pooled MSE, R² compares against the pooled mean.
    return MetricCollection(
        {"mse": tm.MeanSquaredError(), "mae": tm.MeanAbsoluteError(), "rmse": tm.MeanSquaredError(squared=False), "r2": tm.R2Score()}
    )


def prepare(spec: DataSpec, output: torch.Tensor, target: torch.Tensor):
    """Shape outputs and targets the way the metrics expect: (N, C) logits or (N, D) values."""
    if spec.task == "classification":
        return output, target
    return output.reshape(-1), target.reshape(-1)


def is_higher_better(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1]
    return leaf in ("accuracy", "top5", "f1", "r2")
