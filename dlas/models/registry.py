"""Model registry: dlas's named models plus any torchvision classifier by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dlas.registry import Registry

# name -> builder(num_classes, variant) where variant is "cifar" or "imagenet"
MODELS: Registry[Callable[[int, str], nn.Module]] = Registry("model")

# Inputs at most this large get the CIFAR variant under variant=auto.
CIFAR_MAX_SIZE = 64


def has_cifar_variant(name: str) -> bool:
    """dlas's own models have a CIFAR form unless their builder says otherwise; torchvision
    classifiers used by name have none."""
    return name in MODELS and getattr(MODELS.get(name), "cifar_variant", True)


def resolve_variant(variant: str, image_size: int, name: str | None = None) -> str:
    """auto: the CIFAR form for inputs up to CIFAR_MAX_SIZE px when the model has one, else the
    ImageNet form (which the run reports, see :func:`variant_fallback`)."""
    if variant != "auto":
        return variant
    if image_size > CIFAR_MAX_SIZE or (name is not None and not has_cifar_variant(name)):
        return "imagenet"
    return "cifar"


def variant_fallback(name: str, variant: str, image_size: int) -> bool:
    """True when variant=auto picked the ImageNet form only because the model has no CIFAR one."""
    return (
        variant == "auto"
        and image_size <= CIFAR_MAX_SIZE
        and resolve_variant(variant, image_size, name) == "imagenet"
    )


def torchvision_names() -> list[str]:
    from torchvision import models

    import dlas._torchvision  # noqa: F401

    return sorted(models.list_models(module=models))


def available_models() -> list[str]:
    return sorted(set(MODELS.names()) | set(torchvision_names()))


def create_model(
    name: str, num_classes: int, *, variant: str = "auto", image_size: int = 224
) -> nn.Module:
    """Build an untrained model; ``variant`` picks the CIFAR or the ImageNet architecture."""
    variant = resolve_variant(variant, image_size, name)
    if name in MODELS:
        return MODELS.get(name)(num_classes, variant)
    if name in torchvision_names():
        if variant == "cifar":
            raise ValueError(
                f"model {name!r} has no CIFAR variant in dlas; use model.variant=imagenet "
                f"(CIFAR variants: {', '.join(MODELS.names())})"
            )
        from torchvision import models

        return models.get_model(name, num_classes=num_classes)
    raise ValueError(f"Unknown model {name!r}. Available models: {', '.join(available_models())}")
