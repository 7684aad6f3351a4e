"""Architectures built from `jaxnets.nn`, one file per family, and the registry that names them.

    model = jaxnets.models.create("resnet18", variant="cifar", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    logits = model.apply(variables, images, train=False)            # [N, num_classes]

Every registered model maps NHWC float images to logits with `__call__(x, *, train, mask=None)`, takes the
dataset-specific configuration through `variant=` ("imagenet" | "cifar"; "mnist" for `mlp`/`lenet5`) and
`axis_name=` (passed to every BatchNorm); `mask` ([N] bool, the valid rows of a padded batch) is passed to
every BatchNorm as `train` is, so padded rows stay out of its statistics. Submodule names follow
torchvision's module paths with "." -> "_", so `from_torch` maps a torchvision `state_dict` by name.
"""
import inspect
from collections.abc import Callable

import flax.linen as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Decorator: register a model class (or a function returning a module) under `name`.

    Usage: `@register("resnet18")` above a function whose keyword arguments are the model's options.
    Raises: ValueError if `name` is already taken; TypeError if it is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register: name must be a non-empty string, got {name!r}.")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"register: the name {name!r} is already registered (by {_REGISTRY[name].__qualname__}).")
        _REGISTRY[name] = factory
        return factory

    return decorate


def available() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def _options(factory: Callable) -> tuple[list[str], bool]:
    """(accepted keyword names, whether it takes **kwargs) of a factory; Flax's parent/name excluded."""
    params = inspect.signature(factory).parameters
    names = [p for p, v in params.items() if p not in ("parent", "name")
             and v.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    var_kw = any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values())
    return names, var_kw


def create(name: str, **options) -> nn.Module:
    """Build the registered model `name` with `options` (e.g. `num_classes=10, variant="cifar"`).

    Each model documents its options and defaults (`num_classes` defaults to 1000 for `variant="imagenet"`
    and to 10 for "cifar"/"mnist").
    Returns: an unbound Flax module with `__call__(x, *, train, mask=None)` -> logits `[N, num_classes]`.
    Raises: ValueError for an unknown name or an option the model does not take (both listing what exists).
    """
    if name not in _REGISTRY:
        raise ValueError(f"create: unknown model {name!r}; available: {', '.join(available())}.")
    factory = _REGISTRY[name]
    accepted, var_kw = _options(factory)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not var_kw:
        raise ValueError(f"create: model {name!r} does not take option(s) {unknown}; it takes {sorted(accepted)}.")
    return factory(**options)


def check_variant(model: str, variant: str, allowed: tuple[str, ...]) -> str:
    """Validate a `variant=` option (shared by every model). Raises ValueError naming the allowed values."""
    if variant not in allowed:
        raise ValueError(f"{model}: variant must be one of {allowed}, got {variant!r}.")
    return variant


def default_classes(model: str, num_classes: int | None, variant: str) -> int:
    """`num_classes`, or the variant's default: 1000 for "imagenet", 10 for "cifar" and "mnist".

    Raises ValueError (naming `model`) if `num_classes` is not None or a positive int.
    """
    if num_classes is None:
        return 1000 if variant == "imagenet" else 10
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive int, got {num_classes!r}.")
    return num_classes


# Model modules register themselves on import (they import `register` from here, defined above).
from jaxnets.models import alexnet, googlenet, lenet, mlp, nin, resnet, vgg  # noqa: E402,F401
from jaxnets.models.port import from_torch  # noqa: E402

__all__ = ["available", "create", "from_torch", "register"]
