"""Counting a model's parameters as real numbers, the one count ember prints and stores."""

import torch


def real_numel(tensor: torch.Tensor) -> int:
    """The real numbers in `tensor`: a complex value is two (its real and imaginary parts), as in
    its bytes and in neuraloperator's own count (`neuralop.utils.count_model_params`)."""
    return tensor.numel() * (2 if tensor.is_complex() else 1)
