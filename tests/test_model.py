"""The model registry: every registered network works; `seed` is the seed's network exactly."""

import pytest
import torch
from torch import nn

from sightd.errors import SightdError
from sightd.model import BasicBlock, create_model, model_names

# Published parameter counts of the ImageNet (1000-class) networks, from torchvision's docs.
PUBLISHED_PARAMETERS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_scores_each_class_and_can_change_its_classes(name):
    # given a registered network with 1000 classes (so standard variants match the papers)
    model = create_model(name, num_classes=1000).eval()
    if name in PUBLISHED_PARAMETERS:
        assert _count(model) == PUBLISHED_PARAMETERS[name]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # when it scores a batch, then it gives one finite score per class and image
        scores = model(x)
        assert scores.shape == (2, 1000)
        assert torch.isfinite(scores).all()
        # when its head is replaced, then the classes change and the features do not
        features = model.forward_features(x)
        model.reset_classifier(4)
        assert model(x).shape == (2, 4)
        assert torch.equal(model.forward_features(x), features)


def test_seed_is_the_original_network_layer_by_layer():
    model = create_model("seed", num_classes=10)

    conv, bn, relu, pool = model.stem
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (
        3, 64, (7, 7), (2, 2), (3, 3),
    )  # fmt: skip
    assert isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    assert (pool.kernel_size, pool.stride) == (3, 2)

    layer1, layer2 = model.stages  # exactly two residual stages
    assert [type(b) for b in [*layer1, *layer2]] == [BasicBlock] * 4
    for block in layer1:  # 64 -> 64, identity shortcuts
        assert (block.conv1.in_channels, block.conv2.out_channels) == (64, 64)
        assert isinstance(block.shortcut, nn.Identity)
    first, second = layer2  # 64 -> 128, stride 2, 1x1 projection shortcut on the first block
    assert (first.conv1.in_channels, first.conv1.out_channels) == (64, 128)
    assert first.conv1.stride == (2, 2)
    projection = first.shortcut[0]
    assert (projection.kernel_size, projection.stride) == ((1, 1), (2, 2))
    assert isinstance(second.shortcut, nn.Identity)

    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    assert (model.fc.in_features, model.fc.out_features) == (128, 10)
    # Counted by hand from the seed's description (bias-free convs, as batch norm follows):
    stem = 3 * 64 * 7 * 7 + 2 * 64
    layer1 = 2 * (2 * (64 * 64 * 9 + 2 * 64))
    layer2 = (64 * 128 * 9 + 128 * 128 * 9 + 64 * 128 + 3 * 2 * 128) + 2 * (128 * 128 * 9 + 2 * 128)
    assert _count(model) == stem + layer1 + layer2 + (128 * 10 + 10)


def test_an_unknown_arch_is_a_clear_error_listing_the_choices():
    with pytest.raises(SightdError) as error:
        create_model("resnet19", 3)
    assert "resnet19" in str(error.value)
    for name in model_names():
        assert name in str(error.value)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
