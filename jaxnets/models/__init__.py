"""Architectures built from `jaxnets.nn`, one file per family, and the registry that names them
(`jaxnets.models.registry`).

    model = jaxnets.models.create("resnet18", variant="cifar", num_classes=10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    logits = model.apply(variables, images, train=False)            # [N, num_classes]

Every registered model maps NHWC float images to logits with `__call__(x, *, train, mask=None)`, takes the
dataset-specific configuration through `variant=` ("imagenet" | "cifar"; "mnist" for `mlp`/`lenet5`) and
`axis_name=` (passed to every BatchNorm); `mask` ([N] bool, the valid rows of a padded batch) is passed to
every BatchNorm as `train` is, so padded rows stay out of its statistics. Submodule names follow
torchvision's module paths with "." -> "_", so `from_torch` maps a torchvision `state_dict` by name;
`from_torch` also ports into any Flax module (your own, built from `jaxnets.nn` with torch's names) given
`input_shape=`.
"""
# Each model module registers its names on import (it imports `register` from `registry`).
from jaxnets.models import alexnet, googlenet, lenet, mlp, nin, resnet, vgg  # noqa: F401
from jaxnets.models.port import from_torch
from jaxnets.models.registry import (available, check_rate, check_variant, create, default_classes, defaults,
                                     register, unregister)

__all__ = ["available", "check_rate", "check_variant", "create", "default_classes", "defaults", "from_torch",
           "register", "unregister"]
