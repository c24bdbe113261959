"""One conformance test over the whole model registry, in the style of timm's and Keras's.

Every registered model, at a small size on a small version of the data it is meant for, must:
build from the DataSpec alone; give outputs of the shape the DataSpec asks for (and adapt to other
shapes, or refuse them with a ConfigError); give finite gradients to every trainable parameter;
overfit one small batch; build the same weights from the same seed; round-trip its state dict;
and script or trace, and export to ONNX, unless it is on the recorded exception lists below.
"""

import math
import warnings

import pytest
import torch

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import EXAMPLES, MODELS, count_parameters, create_model, example_spec, list_models

# Small versions of each example kind's data (ember.models.EXAMPLE_SPECS).
SMALL_SPECS = {
    "signal": DataSpec(input_shape=(1, 40), task="classification", num_classes=10),
    "scalar": DataSpec(input_shape=(1,), task="regression", target_shape=(1,)),
    "digits": DataSpec(input_shape=(1, 12, 12), task="classification", num_classes=10),
    "image": DataSpec(input_shape=(3, 16, 16), task="classification", num_classes=10),
    "field1d": DataSpec(input_shape=(1, 32), task="regression", target_shape=(1, 32)),
    "field2d": DataSpec(input_shape=(2, 16, 16), task="regression", target_shape=(1, 16, 16)),
}
# Other shapes of the same kind: odd sizes (padding and cropping), other channel and class
# counts, regression instead of classification, targets without a channel axis.
OTHER_SPECS = {
    "signal": [
        DataSpec(input_shape=(3, 33), task="regression", target_shape=(2,)),
        DataSpec(input_shape=(7,), task="regression", target_shape=()),
    ],
    "scalar": [DataSpec(input_shape=(7,), task="regression", target_shape=(2,))],
    "digits": [DataSpec(input_shape=(3, 9, 11), task="classification", num_classes=3)],
    "image": [
        DataSpec(input_shape=(1, 9, 11), task="regression", target_shape=(2,)),
        DataSpec(input_shape=(3, 224, 224), task="classification", num_classes=5),
    ],
    "field1d": [
        DataSpec(input_shape=(2, 30), task="regression", target_shape=(30,)),
        DataSpec(input_shape=(2, 12, 10), task="regression", target_shape=(2, 12, 10)),
    ],
    "field2d": [
        DataSpec(input_shape=(3, 15, 17), task="regression", target_shape=(2, 15, 17)),
        DataSpec(input_shape=(1, 15, 17), task="classification", num_classes=4, target_shape=(15, 17)),
    ],
}
# Small sizes; a model not listed here is small at its defaults.
SMALL = {
    "afno": {"dim": 32, "depth": 1, "num_blocks": 4, "patch_size": 4},
    "cnn1d": {"channels": 16},
    "diffusion": {"width": 8, "depth": 2},
    "fno": {"modes": 4, "width": 8, "depth": 2},
    "gru": {"hidden": 16},
    "mlp": {"width": 32},
    "resnet": {"depth": 10, "width": 8},
    "resnet1d": {"depth": 10, "width": 8},
    "transformer": {"dim": 16, "depth": 1, "heads": 2},
    "unet": {"width": 8, "depth": 2},
    "vae": {"width": 8, "depth": 2, "latent_dim": 4},
    "vgg3": {"width": 8, "hidden": 32},
    "vit": {"dim": 16, "depth": 1, "heads": 2},
}
# The recorded exceptions, name -> reason. All are empty: every registered model scripts and
# exports (the FNO's spectral products use (real, imaginary) pairs because ONNX has no complex
# tensors). A model that stops scripting or exporting fails here until its reason is recorded.
# Models that torch.jit.script cannot compile: they are traced instead.
SCRIPT_FAILS: dict[str, str] = {}
# Models that neither script nor trace.
JIT_FAILS: dict[str, str] = {}
# Models that the torch.onnx dynamo exporter cannot export.
ONNX_FAILS: dict[str, str] = {}

NAMES = list_models()


def small_spec(name):
    return SMALL_SPECS[EXAMPLES.get(name, "signal")]


def build(name, spec=None, seed=0, **overrides):
    torch.manual_seed(seed)
    return create_model(name, spec or small_spec(name), **{**SMALL.get(name, {}), **overrides})


def expected_shape(model, spec, n):
    if callable(getattr(model, "loss", None)):  # generative models reconstruct or denoise their input
        return (n, *spec.input_shape)
    if spec.task == "classification":
        extra = spec.target_shape if spec.target_shape else ()
        return (n, spec.num_classes, *extra)
    return (n, *spec.target_shape)


def batch(spec, n=8, seed=0):
    """x ~ N(0, 1); labels at random; regression targets a fixed linear function of x, which every
    model can represent (a channel mix of the input for fields, a linear map for vectors)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.input_shape, generator=g)
    if spec.task == "classification":
        return x, torch.randint(0, spec.num_classes, (n, *spec.target_shape), generator=g)
    target, spatial = spec.target_shape, spec.input_shape[1:]
    if spatial and tuple(target[-len(spatial) :]) == tuple(spatial):
        k = math.prod(target) // math.prod(spatial)
        mix = torch.randn(k, spec.input_shape[0], generator=g) / spec.input_shape[0] ** 0.5
        return x, torch.einsum("oc,nc...->no...", mix, x).reshape(n, *target)
    w = torch.randn(spec.in_features, max(1, math.prod(target)), generator=g) / spec.in_features**0.5
    return x, (x.flatten(1) @ w).reshape(n, *target)


def loss_of(model, x, y, spec, generator_seed=0):
    if callable(getattr(model, "loss", None)):
        return model.loss((x, y), generator=torch.Generator().manual_seed(generator_seed))[0]
    out = model(x)
    if spec.task == "classification":
        if getattr(model, "default_loss", "") == "nll":
            return torch.nn.functional.nll_loss(out, y)
        return torch.nn.functional.cross_entropy(out, y)
    return torch.nn.functional.mse_loss(out, y)


def test_registry_covers_the_families():
    expected = {
        "linear",
        "mlp",
        "ann",
        "poly3",
        "mnist_net",
        "simple_cnn",
        "vgg3",
        "cnn1d",
        "resnet1d",
        "gru",
        "resnet",
        "unet",
        "vit",
        "transformer",
        "fno",
        "afno",
        "vae",
        "diffusion",
    }
    assert expected <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_the_spec_and_has_a_description(name):
    spec = small_spec(name)
    model = build(name)
    assert count_parameters(model) > 0
    assert count_parameters(model) < 300_000, f"{name} is too big for the conformance test; add small sizes to SMALL"
    assert MODELS.describe(name), f"{name} has no one-line docstring"
    # The example spec is the full-size version of the same kind of data.
    assert len(example_spec(name).input_shape) == len(spec.input_shape)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_follows_the_spec(name):
    spec = small_spec(name)
    model = build(name).eval()
    x = torch.randn(3, *spec.input_shape)
    with torch.no_grad():
        assert tuple(model(x).shape) == expected_shape(model, spec, 3)
    # Other shapes of the same kind of data: the model adapts, or refuses with a ConfigError.
    adapted = 0
    for other in OTHER_SPECS[EXAMPLES.get(name, "signal")]:
        try:
            model = build(name, other).eval()
        except ConfigError:
            continue
        adapted += 1
        with torch.no_grad():
            assert tuple(model(torch.randn(2, *other.input_shape)).shape) == expected_shape(model, other, 2), (
                name,
                other,
            )
    assert adapted or name in ("poly3",), f"{name} adapts to none of the other shapes of its data"


@pytest.mark.parametrize("name", NAMES)
def test_wrong_kind_of_data_is_a_config_error(name):
    """Every model builds on its own data and refuses, with a ConfigError, the data it cannot take."""
    for kind, spec in SMALL_SPECS.items():
        try:
            model = build(name, spec).eval()
        except ConfigError as e:
            assert str(e) and "\n" not in str(e)
            continue
        with torch.no_grad():
            assert tuple(model(torch.randn(2, *spec.input_shape)).shape) == expected_shape(model, spec, 2), (name, kind)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_for_every_trainable_parameter(name):
    spec = small_spec(name)
    model = build(name).train()
    x, y = batch(spec, n=4)
    loss_of(model, x, y, spec).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: {pname} gets no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast(name):
    """trainer.precision=bf16 runs the forward pass under autocast; the loss and gradients stay finite."""
    spec = small_spec(name)
    model = build(name).train()
    x, y = batch(spec, n=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_of(model, x, y, spec)
    loss.float().backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_overfits_one_small_batch(name):
    """The loss on one batch of 8 falls by at least 90% within a few hundred Adam steps."""
    spec = small_spec(name)
    model = build(name)
    x, y = batch(spec)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        first = loss_of(model, x, y, spec).item()
    model.train()
    for step in range(300):
        loss = loss_of(model, x, y, spec)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = loss_of(model, x, y, spec).item()
    assert last <= 0.1 * first, f"{name}: loss {first:.4g} -> {last:.4g}"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights_and_state_dict_round_trip(name):
    a, b, c = build(name, seed=0), build(name, seed=0), build(name, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa), f"{name}: the seed changes nothing"
    c.load_state_dict(sa)
    spec = small_spec(name)
    x = torch.randn(2, *spec.input_shape)
    a.eval(), c.eval()
    with torch.no_grad():
        assert torch.allclose(a(x), c(x))


def _jit(model, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.script(model), "script"
        except Exception as e:  # noqa: BLE001 - the reason is reported below
            script_error = e
        return torch.jit.trace(model, (x,), check_trace=False), f"trace ({type(script_error).__name__})"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated in favour of torch.export
@pytest.mark.parametrize("name", NAMES)
def test_torchscript(name):
    if name in JIT_FAILS:
        pytest.xfail(JIT_FAILS[name])
    spec = small_spec(name)
    model = build(name).eval()
    x = torch.randn(2, *spec.input_shape)
    jitted, how = _jit(model, x)
    assert how == "script" or name in SCRIPT_FAILS, (
        f"{name} does not script: {how}; add it to SCRIPT_FAILS with the reason"
    )
    assert how != "script" or name not in SCRIPT_FAILS, f"{name} scripts now: remove it from SCRIPT_FAILS"
    with torch.no_grad():
        torch.testing.assert_close(jitted(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export(name, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs the export extra: pip install ember[export]")
    onnx = pytest.importorskip("onnx")
    spec = small_spec(name)
    model = build(name).eval()
    x = torch.randn(2, *spec.input_shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
        program.save(str(tmp_path / "model.onnx"))
        onnx.checker.check_model(str(tmp_path / "model.onnx"))
    except Exception as e:
        if name in ONNX_FAILS:
            pytest.xfail(ONNX_FAILS[name])
        raise AssertionError(
            f"{name} does not export to ONNX ({type(e).__name__}: {str(e)[:300]}); add it to ONNX_FAILS with the reason"
        ) from e
    assert name not in ONNX_FAILS, f"{name} exports now: remove it from ONNX_FAILS"
    try:
        import onnxruntime
    except ImportError:
        return  # the export is valid ONNX; parity needs onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-5)


def _compile_forward(name):
    spec = small_spec(name)
    model = build(name).eval()
    x = torch.randn(2, *spec.input_shape)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inductor touches torch.jit internals
def test_torch_compile_forward_of_one_model():
    """torch.compile on one convolutional model runs by default; the whole registry under -m compile."""
    _compile_forward("resnet1d")


@pytest.mark.compile
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_forward(name):
    _compile_forward(name)


def test_unknown_model_and_argument_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; choose one of: afno, ann, cnn1d, diffusion, "):
        create_model("nope", small_spec("mlp"))
    with pytest.raises(
        ConfigError,
        match="model 'mlp' has no argument 'widht'; valid arguments: width, depth, activation, dropout, norm",
    ):
        create_model("mlp", small_spec("mlp"), widht=3)
    with pytest.raises(ConfigError, match=r"model.depth=19 is not a ResNet depth; choose one of: 10, 18, 34, 50"):
        create_model("resnet", small_spec("resnet"), depth=19)
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        create_model("mlp", small_spec("mlp"), activation="swish")
