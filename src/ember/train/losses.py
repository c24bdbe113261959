"""Loss functions by name; `auto` picks by task."""

from torch import nn

from ember.data.spec import DataSpec


def build_loss(name: str, spec: DataSpec, model: nn.Module, label_smoothing: float = 0.0) -> nn.Module:
    if name == "auto":
        if spec.task == "classification":
            # Models that end in log_softmax (the tutorials' MNIST Net) declare it.
            name = getattr(model, "default_loss", "cross_entropy")
        else:
            name = "mse"
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return {"nll": nn.NLLLoss, "mse": nn.MSELoss, "l1": nn.L1Loss, "mae": nn.L1Loss, "huber": nn.HuberLoss}[name]()
