"""The model registry: `register`, `unregister`, `available`, `create`, `defaults`, and the option checks every model shares.

It imports no model: each model file imports `register` (and the public helpers `check_variant`,
`default_classes`) from here, and `jaxnets.models` imports the model files, so there is no import cycle.

Re-registering (a notebook cell run twice, `importlib.reload`): registering a factory with the SAME
qualified name (`__module__` and `__qualname__`) as the one already under `name` silently replaces it;
a different factory under a taken name raises ValueError unless `register(name, replace=True)`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from jaxnets.checks import check_bool, check_choice, check_positive_int, check_real

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def _qualified(factory: Callable) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def register(name: str, *, replace: bool = False) -> Callable:
    """Decorator: register a model class (or a function returning a module) under `name`.

    Usage: `@register("resnet18")` above a function whose keyword arguments are the model's options.

    Args:
      name: the registry name, a non-empty string.
      replace: replace whatever is registered under `name`. Without it, re-registering a factory with the
        same qualified name (module and `__qualname__`, e.g. a notebook cell run again) replaces it too.
    Returns: a decorator that registers its argument and returns it unchanged.
    Raises:
      TypeError: `name` is not a string, `replace` not a bool, or the decorated object is not callable.
      ValueError: `name` is empty, or already taken by a different factory and `replace` is False.
    """
    fn = "register"
    if not isinstance(name, str):
        raise TypeError(f"{fn}: name must be a non-empty string, got {type(name).__name__} {name!r}.")
    if not name:
        raise ValueError(f"{fn}: name must be a non-empty string, got {name!r}.")
    replace = check_bool(fn, "replace", replace)

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not callable(factory):
            raise TypeError(f"{fn}: {name!r} must be registered with a callable (a module class or a function "
                            f"returning a module), got {type(factory).__name__}.")
        old = _REGISTRY.get(name)
        if old is not None and not replace and _qualified(old) != _qualified(factory):
            raise ValueError(f"{fn}: the name {name!r} is already registered (by {_qualified(old)}); pass "
                             f"register({name!r}, replace=True) to replace it with {_qualified(factory)}.")
        _REGISTRY[name] = factory
        return factory

    return decorate


def unregister(name: str) -> None:
    """Remove `name` from the registry (e.g. a notebook's experiment, or a test's temporary model).

    Raises: TypeError for a non-string name; ValueError for a name that is not registered.
    """
    _factory("unregister", name)
    del _REGISTRY[name]


def available() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def _factory(fn: str, name: str) -> Callable[..., nn.Module]:
    if not isinstance(name, str):
        raise TypeError(f"{fn}: the model name must be a string, got {type(name).__name__} {name!r}.")
    if name not in _REGISTRY:
        raise ValueError(f"{fn}: unknown model {name!r}; available: {', '.join(available())}.")
    return _REGISTRY[name]


def _options(factory: Callable) -> tuple[dict[str, Any], bool]:
    """({accepted keyword: default}, whether it takes **kwargs) of a factory; Flax's parent/name excluded."""
    params = inspect.signature(factory).parameters
    names = {p: v.default for p, v in params.items() if p not in ("parent", "name")
             and v.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    var_kw = any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values())
    return names, var_kw


def defaults(name: str) -> dict[str, Any]:
    """The options of the registered model `name` and their defaults, e.g. `defaults("lenet5")["variant"]`.

    Options without a default map to `inspect.Parameter.empty`.
    Raises: TypeError for a non-string name; ValueError for an unknown one (listing what exists).
    """
    return _options(_factory("defaults", name))[0]


def create(name: str, **options) -> nn.Module:
    """Build the registered model `name` with `options` (e.g. `num_classes=10, variant="cifar"`).

    Each model documents its options and defaults (`num_classes` defaults to 1000 for `variant="imagenet"`
    and to 10 for "cifar"/"mnist").
    Returns: an unbound Flax module with `__call__(x, *, train)` -> logits `[N, num_classes]`.
    Raises: TypeError for a non-string name (and the model's own type checks); ValueError for an unknown
      name or an option the model does not take (both listing what exists).
    """
    factory = _factory("create", name)
    accepted, var_kw = _options(factory)
    unknown = sorted(set(options) - set(accepted))
    if unknown and not var_kw:
        raise ValueError(f"create: model {name!r} does not take option(s) {unknown}; it takes {sorted(accepted)}.")
    return factory(**options)


def check_variant(model: str, variant: str, allowed: tuple[str, ...]) -> str:
    """Validate the `variant=` option of the model `model` (shared by every model).

    Returns: `variant`. Raises: TypeError for a non-string, ValueError for a name not in `allowed` (listed).
    """
    return check_choice(model, "variant", variant, allowed)


def default_classes(model: str, num_classes: int | None, variant: str) -> int:
    """`num_classes`, or the variant's default: 1000 for "imagenet", 10 for "cifar" and "mnist".

    Raises: TypeError (naming `model`) if `num_classes` is not None or an int (a bool or 1.5 included);
      ValueError if it is an int < 1.
    """
    if num_classes is None:
        return 1000 if variant == "imagenet" else 10
    return check_positive_int(model, "num_classes", num_classes)


def check_rate(model: str, name: str, rate: float) -> float:
    """Validate a drop-rate option such as `dropout`: a real number in [0, 1).

    Returns: `rate` as a float. Raises: TypeError (naming `model` and `name`) for a non-real or a bool;
      ValueError for a value outside [0, 1).
    """
    return check_real(model, name, rate, minimum=0.0, maximum=1.0, max_inclusive=False)
