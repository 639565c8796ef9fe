import pytest
import torch

from dlas.models import available_models, create_model, model_stats

STUDY_CIFAR = ["resnet18", "mobilenet_v2", "vgg16"]


@pytest.mark.parametrize("name", STUDY_CIFAR)
def test_cifar_variants_keep_resolution_in_the_stem(name):
    model = create_model(name, 10, image_size=32).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.stride == (1, 1) and first_conv.kernel_size == (3, 3)


def test_imagenet_variant_is_torchvisions():
    model = create_model("resnet18", 1000, image_size=224)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)


def test_any_torchvision_classifier_by_name():
    model = create_model("shufflenet_v2_x0_5", 7, image_size=224).eval()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_unknown_model_lists_what_is_available():
    with pytest.raises(ValueError) as err:
        create_model("nope", 10)
    message = str(err.value)
    assert "Available models" in message
    for name in ("resnet18", "efficientnet_b0", "densenet161", "tiny_cnn"):
        assert name in message
    assert "regnet_x_400mf" in available_models()


def test_stats_count_macs_params_and_sparsity():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False))
    model[0].weight.data[0] = 0
    stats = model_stats(model, (1, 3, 6, 6))
    assert stats["model/macs"] == 4 * 3 * 9 * 4 * 4
    assert stats["model/params"] == 4 * 3 * 9
    assert stats["model/sparsity"] == pytest.approx(0.25)


def test_auto_variant_falls_back_to_imagenet_for_models_without_a_cifar_form(compose_cfg):
    from dlas import validity
    from dlas.config import validate
    from dlas.models.registry import resolve_variant, variant_fallback

    # The study's own command style on the default (32 px) data set.
    cfg = validate(compose_cfg("model=efficientnet_b0"))
    assert validity.problems(cfg) == []
    assert resolve_variant("auto", 32, "efficientnet_b0") == "imagenet"
    assert variant_fallback("efficientnet_b0", "auto", 32)
    assert not variant_fallback("resnet18", "auto", 32)  # it has a CIFAR form
    assert resolve_variant("auto", 32, "resnet18") == "cifar"
    model = create_model("efficientnet_b0", 10, image_size=32).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    # Asking for the CIFAR form explicitly is refused before any work.
    refused = validity.problems(
        validate(compose_cfg("model=efficientnet_b0", "model.variant=cifar"))
    )
    assert refused and "model.variant=imagenet" in refused[0]
