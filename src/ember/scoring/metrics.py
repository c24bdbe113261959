"""Evaluation metrics per task, on torchmetrics."""

import torch

from ember.data.spec import DataSpec


def build_metrics(spec: DataSpec, climatology: torch.Tensor | None = None):
    """The task's metrics: a torchmetrics MetricCollection for classification; for regression,
    RegressionMetrics, which reports in physical units (`climatology`: the train split's mean
    target, for anomaly correlations)."""
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
    from ember.scoring.regression import RegressionMetrics

    return RegressionMetrics(spec, climatology)


HIGHER_BETTER = ("accuracy", "top5", "f1", "r2", "acc", "skill")


def is_higher_better(metric: str) -> bool:
    """For `val/accuracy`, `accuracy`, or a per-variable `val/acc/t2m`."""
    parts = metric.split("/")
    name = parts[1] if len(parts) == 3 else parts[-1]
    return name in HIGHER_BETTER
