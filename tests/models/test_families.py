"""What each family promises beyond the conformance test: the tutorials' exact layers, the
published architectures' parameter counts, presets, stems, and the generative models' maths."""

import math

import pytest
import torch

from ember.config import compose
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import EXAMPLE_SPECS, count_parameters, create_model, example_spec, list_models, register_model

MNIST = DataSpec(input_shape=(1, 28, 28), task="classification", num_classes=10)
CIFAR = DataSpec(input_shape=(3, 32, 32), task="classification", num_classes=10)
IMAGENET = DataSpec(input_shape=(3, 224, 224), task="classification", num_classes=1000)
SIGNAL = DataSpec(input_shape=(1, 40), task="classification", num_classes=10)
SCALAR = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))
DIGITS = DataSpec(input_shape=(1, 8, 8), task="classification", num_classes=10)


def test_tutorial_fully_connected_models_have_the_tutorial_layers():
    ann = create_model("ann", SCALAR)
    assert (ann.hidden_layer.in_features, ann.hidden_layer.out_features, ann.output_layer.out_features) == (1, 3, 1)
    poly = create_model("poly3", SCALAR)
    with torch.no_grad():
        poly.linear.weight.copy_(torch.tensor([[1.0, 0.0, -1 / 6]]))
        poly.linear.bias.zero_()
    x = torch.tensor([[0.5]])
    assert torch.allclose(poly(x), x - x**3 / 6)
    assert poly.describe() == "Result: y = 0 + 1 x + 0 x^2 - 0.166667 x^3"
    assert (
        create_model("mlp", DataSpec(input_shape=(7,), task="regression", target_shape=(2,)), width=8)
        .net[1]
        .in_features
        == 7
    )
    assert count_parameters(create_model("linear", SIGNAL)) == 40 * 10 + 10


def test_mnist_net_is_the_tutorial_net():
    net = create_model("mnist_net", MNIST)
    assert net.fc1.in_features == 9216 and net.fc1.out_features == 128 and net.fc2.out_features == 10
    assert (net.conv1.out_channels, net.conv2.out_channels, net.dropout1.p, net.dropout2.p) == (32, 64, 0.25, 0.5)
    assert count_parameters(net) == 1_199_882
    net.eval()
    out = net(torch.randn(3, 1, 28, 28))
    assert torch.allclose(out.exp().sum(1), torch.ones(3))  # log_softmax
    assert net.default_loss == "nll"
    # Other image sizes: the flatten size follows.
    assert create_model("mnist_net", DIGITS)(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConfigError, match="classifier"):
        create_model("mnist_net", DataSpec(input_shape=(1, 28, 28), task="regression", target_shape=(1,)))


def test_vgg3_and_simple_cnn_are_the_tutorials_with_computed_flatten_sizes():
    vgg = create_model("vgg3", CIFAR)
    assert vgg.classifier[0].in_features == 256 * 4 * 4 == 4096
    assert [m.out_channels for m in vgg.features if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256]
    assert vgg.classifier[-1].out_features == 10 and vgg.classifier[2].p == 0.5
    cnn = create_model("simple_cnn", CIFAR)
    assert (cnn.conv1.in_channels, cnn.conv1.out_channels, cnn.conv1.kernel_size) == (3, 16, (3, 3))
    assert cnn.fc.in_features == 16 * 30 * 30  # not the recap's 16*8*8
    assert cnn(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    with pytest.raises(ConfigError, match="at least 8x8"):
        create_model("vgg3", DataSpec(input_shape=(1, 6, 6), task="classification", num_classes=2))


def test_default_cnn1d_is_unchanged():
    """`ember train` with no arguments relies on this architecture."""
    assert count_parameters(create_model("cnn1d", SIGNAL)) == 48_074


def test_resnets_match_the_published_parameter_counts():
    # torchvision's resnet18 and resnet50 (ImageNet stem, 1000 classes).
    assert count_parameters(create_model("resnet", IMAGENET, depth=18)) == 11_689_512
    assert count_parameters(create_model("resnet", IMAGENET, depth=50)) == 25_557_032
    assert count_parameters(create_model("resnet", IMAGENET, depth=34)) == 21_797_672


def test_resnet_stems_follow_the_image_size():
    small = create_model("resnet", CIFAR, width=8)
    assert small.stem[0].stride == (1, 1) and small.stem[0].kernel_size == (3, 3) and len(small.stem) == 3
    big = create_model("resnet", DataSpec(input_shape=(3, 160, 160), task="classification", num_classes=3), width=8)
    assert (
        big.stem[0].stride == (2, 2)
        and big.stem[0].kernel_size == (7, 7)
        and isinstance(big.stem[3], torch.nn.MaxPool2d)
    )
    forced = create_model("resnet", CIFAR, width=8, stem="imagenet")
    assert forced.stem[0].kernel_size == (7, 7)
    # model=resnet on 8x8 digits and on 32x32 CIFAR both work without any size arithmetic.
    assert create_model("resnet", DIGITS, depth=10, width=8)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_vit_presets_and_overrides():
    tiny = create_model("vit", IMAGENET)
    # DeiT-tiny has 5,717,416 parameters; ember's ViT mean-pools instead of using a class token
    # (one 192-wide token and its position embedding fewer).
    assert count_parameters(tiny) == 5_717_416 - 2 * 192
    assert tiny.embed.kernel_size == (16, 16) and tiny.pos.shape == (1, 196, 192) and len(tiny.blocks) == 12
    small = create_model("vit", CIFAR, size="small")
    assert small.embed.out_channels == 384 and small.blocks[0].attn.heads == 6 and small.embed.kernel_size == (4, 4)
    cfg = compose(["model=vit", "model.depth=6", "data=mnist1d"])
    assert cfg.model.depth == 6 and cfg.model.size == "tiny"
    six = create_model("vit", CIFAR, depth=6, dim=64, heads=4)
    assert len(six.blocks) == 6 and six.blocks[0].attn.heads == 4
    with pytest.raises(ConfigError, match="must divide"):
        create_model("vit", CIFAR, dim=64, heads=5)
    # 28x28 with 4x4 patches: padded to 28 (divisible); 30x30 is padded to 32.
    assert create_model(
        "vit", DataSpec(input_shape=(1, 30, 30), task="classification", num_classes=2), dim=16, depth=1, heads=2
    )(torch.randn(1, 1, 30, 30)).shape == (1, 2)


def test_sequence_models():
    t = create_model("transformer", SIGNAL, patch_size=4, dim=16, depth=1, heads=2)
    assert t.pos.shape == (1, 10, 16)
    assert t(torch.randn(2, 1, 40)).shape == (2, 10)
    g = create_model("gru", SIGNAL, hidden=8, layers=2, bidirectional=True)
    assert g(torch.randn(2, 1, 40)).shape == (2, 10) and g.head.in_features == 16
    with pytest.raises(ConfigError, match="patch_size"):
        create_model("transformer", SIGNAL, patch_size=41)


def test_unet_segmentation_and_odd_grids():
    seg = DataSpec(input_shape=(3, 37, 50), task="classification", num_classes=5, target_shape=(37, 50))
    model = create_model("unet", seg, width=4, depth=3).eval()
    assert model(torch.randn(2, 3, 37, 50)).shape == (2, 5, 37, 50)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 37, 50)), torch.randint(0, 5, (2, 37, 50)))
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="predicts a field"):
        create_model("unet", CIFAR)


def test_fno_weights_do_not_depend_on_the_resolution():
    """A Fourier neural operator trained at one resolution runs at another (zero-shot super-resolution)."""
    torch.manual_seed(0)
    coarse = create_model("fno", DataSpec(input_shape=(1, 64), task="regression", target_shape=(64,)), modes=8, width=8)
    fine = create_model("fno", DataSpec(input_shape=(1, 256), task="regression", target_shape=(256,)), modes=8, width=8)
    fine.load_state_dict(coarse.state_dict())
    x = torch.linspace(0, 2 * math.pi, 257)[:-1]
    u = torch.sin(x).reshape(1, 1, 256)
    # Both resolutions see the same smooth function; the outputs agree at the shared points, up to
    # the aliasing of what the activations add above the coarse grid's band (0.7% here, at random
    # weights of the paper's scale; weights tied to a grid would differ by their whole size).
    a, b = fine(u)[:, ::4], coarse(u[..., ::4])
    assert ((a - b).norm() / b.norm()).item() < 0.02
    field = DataSpec(input_shape=(2, 20, 24), task="regression", target_shape=(3, 20, 24))
    assert create_model("fno", field, modes=6, width=8)(torch.randn(2, 2, 20, 24)).shape == (2, 3, 20, 24)


def test_afno_options():
    spec = DataSpec(input_shape=(2, 18, 36), task="regression", target_shape=(2, 18, 36))
    model = create_model("afno", spec, dim=32, depth=1, num_blocks=4, patch_size=4, modes_fraction=0.5)
    assert model(torch.randn(2, 2, 18, 36)).shape == (2, 2, 18, 36)
    assert model.grid == (5, 9)  # 18x36 padded to 20x36, in 4x4 patches
    with pytest.raises(ConfigError, match="must divide"):
        create_model("afno", spec, dim=30, num_blocks=4)


def test_vae_elbo_terms_and_sampling():
    model = create_model("vae", DIGITS, width=8, latent_dim=4)
    x = torch.randn(6, 1, 8, 8)
    loss, logs = model.loss((x, None))
    assert set(logs) == {"recon", "kl"} and torch.isclose(loss, logs["recon"] + logs["kl"])
    model.eval()
    assert torch.equal(model.loss((x, None))[0], model.loss((x, None))[0])  # evaluation is deterministic
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8) and torch.isfinite(samples).all()
    assert torch.equal(samples, model.sample(5, generator=torch.Generator().manual_seed(0)))


def test_edm_preconditioning_loss_weighting_and_heun_sampler():
    model = create_model("diffusion", DIGITS, width=8, depth=1, steps=6)
    sd = model.sigma_data
    x = torch.randn(4, 1, 8, 8)
    # The network's output layer starts at zero, so D(x; s) = c_skip(s) x.
    sigma = torch.tensor([0.1, 1.0, 10.0, 80.0])
    expected = x * (sd**2 / (sigma**2 + sd**2)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(model(x, sigma), expected)
    # EDM's weighting makes the initial loss about 1 at every noise level for unit-variance data.
    data = torch.randn(256, 1, 8, 8)
    loss, _ = model.loss((data, None), generator=torch.Generator().manual_seed(0))
    assert 0.8 < loss.item() < 1.2
    levels = model.noise_levels(6)
    assert levels[0] == pytest.approx(80.0) and levels[-2] == pytest.approx(0.002) and levels[-1] == 0
    assert (levels[:-1].diff() < 0).all()
    model.eval()
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 8, 8) and torch.isfinite(samples).all()


def test_every_model_names_the_data_it_is_meant_for():
    for name in list_models():
        spec = example_spec(name)
        assert spec in EXAMPLE_SPECS.values()
        create_model(name, spec)  # builds on it at default size
    with pytest.raises(ValueError, match="example must be one of"):
        register_model("x", example="nope")
    with pytest.raises(ConfigError, match="unknown model"):
        example_spec("nope")
