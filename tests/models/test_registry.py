"""One conformance test over the whole model registry, in the style of timm's."""

import pytest
import torch

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import MODELS, count_parameters, create_model, list_models

SIGNAL = DataSpec(input_shape=(1, 40), task="classification", num_classes=10)
TABLE = DataSpec(input_shape=(7,), task="regression", target_shape=(2,))
SCALAR = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))


def _specs_for(name):
    """The specs a model accepts: it raises ConfigError (not a crash) for the others."""
    accepted = []
    for spec in (SIGNAL, TABLE, SCALAR):
        try:
            create_model(name, spec)
            accepted.append(spec)
        except ConfigError:
            pass
    return accepted


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_trains_and_round_trips(name):
    specs = _specs_for(name)
    assert specs, f"{name} accepts none of the test specs"
    for spec in specs:
        torch.manual_seed(0)
        model = create_model(name, spec)
        assert count_parameters(model) > 0
        x = torch.randn(4, *spec.input_shape)
        out = model(x)
        expected = (4, spec.num_classes) if spec.task == "classification" else (4, *spec.target_shape)
        assert tuple(out.shape) == expected, (name, spec)
        # One optimizer step changes the weights and gives finite outputs.
        before = [p.detach().clone() for p in model.parameters()]
        out.float().pow(2).mean().backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        # The state dict loads into a fresh instance and reproduces the outputs.
        clone = create_model(name, spec)
        clone.load_state_dict(model.state_dict())
        model.eval(), clone.eval()
        assert torch.allclose(model(x), clone(x))
        assert MODELS.describe(name), f"{name} has no one-line docstring"


def test_unknown_model_and_argument_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown model 'nope'; choose one of: ann, cnn1d, mlp, poly3"):
        create_model("nope", SIGNAL)
    with pytest.raises(ConfigError, match="model 'mlp' has no argument 'widht'; valid arguments: width, depth, activation, dropout"):
        create_model("mlp", SIGNAL, widht=3)


def test_models_size_themselves_from_the_spec():
    assert create_model("mlp", TABLE, width=8).net[1].in_features == 7
    assert create_model("cnn1d", DataSpec(input_shape=(3, 64), task="classification", num_classes=4))(torch.randn(2, 3, 64)).shape == (2, 4)


def test_tutorial_models_have_the_tutorial_layers():
    ann = create_model("ann", SCALAR)
    assert (ann.hidden_layer.in_features, ann.hidden_layer.out_features, ann.output_layer.out_features) == (1, 3, 1)
    poly = create_model("poly3", SCALAR)
    with torch.no_grad():
        poly.linear.weight.copy_(torch.tensor([[1.0, 0.0, -1 / 6]]))
        poly.linear.bias.zero_()
    x = torch.tensor([[0.5]])
    assert torch.allclose(poly(x), x - x**3 / 6)
    assert poly.describe() == "Result: y = 0 + 1 x + 0 x^2 - 0.166667 x^3"
