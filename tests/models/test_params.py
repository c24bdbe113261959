"""Parameters are counted as real numbers: a complex weight is two, in every count ember prints or stores."""

import pytest
import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.inspection.model_summary import summarize
from ember.models import count_parameters, real_numel


class Spectral(nn.Module):
    """A complex weight (as neuraloperator's FNO stores its spectral weights) beside a real one."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3, 4, dtype=torch.cfloat))
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x) + self.weight.real.sum()


def test_a_complex_value_counts_as_two_real_numbers():
    assert real_numel(torch.zeros(5, dtype=torch.cfloat)) == 10
    assert real_numel(torch.zeros(5, dtype=torch.cdouble)) == 10
    assert real_numel(torch.zeros(5)) == 5


def test_count_parameters_and_the_summary_agree_on_a_complex_weight():
    model = Spectral()
    assert count_parameters(model) == 2 * 12 + 4 * 4 + 4
    spec = DataSpec(input_shape=(4,), task="regression", target_shape=(4,))
    summary = summarize(model, spec)
    assert summary.total_params == summary.trainable_params == count_parameters(model)
    assert {row.name: row.params for row in summary.rows}["weight"] == 24


def test_neuraloperators_own_count_is_ours():
    neuralop = pytest.importorskip("neuralop")
    from neuralop.models import FNO
    from neuralop.utils import count_model_params

    model = FNO(n_modes=(8,), hidden_channels=8, in_channels=2, out_channels=1, n_layers=2)
    assert any(p.is_complex() for p in model.parameters()), neuralop.__version__
    assert count_parameters(model) == count_model_params(model) > sum(p.numel() for p in model.parameters())
