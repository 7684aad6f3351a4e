"""jaxnets.models.googlenet: torchvision's parameter count, the ceil-mode pool sizes, auxiliary heads
(train returns a triple, eval the logits), a jit-compiled training step on the CIFAR variant, errors.
PyTorch parity of the ported weights is in test_port.py."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnets import layers, models

from _variables import FAST_COMPILE, random_variables
from jaxnets.models import googlenet as G


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_registered():
    assert "googlenet" in models.available()


@pytest.mark.parametrize("variant, size, aux_logits, classes, params", [
    ("imagenet", 224, False, 1000, 6_624_904),   # torchvision's googlenet(aux_logits=False)
    ("imagenet", 224, True, 1000, 13_004_888),   # + aux1 (3,188,968) + aux2 (3,191,016)
    ("cifar", 32, True, 10, 9_952_958),
])
def test_parameter_count_and_output_shapes(variant, size, aux_logits, classes, params):
    model = models.create("googlenet", variant=variant, aux_logits=aux_logits)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    out, variables = jax.eval_shape(
        lambda x: model.init_with_output({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=True), x)
    assert count(variables["params"]) == params
    if aux_logits:  # training with aux heads: (logits, aux1, aux2)
        assert isinstance(out, tuple) and [o.shape for o in out] == [(2, classes)] * 3
    else:
        assert out.shape == (2, classes)
    assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x).shape == (2, classes)


def test_cifar_without_aux_heads_count():
    model = models.create("googlenet", variant="cifar")
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    assert count(variables["params"]) == 5_602_474
    assert "aux1" not in variables["params"]


def test_ceil_mode_pool_sizes():
    model = models.create("googlenet")
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)

    def run(x):
        v = model.init(jax.random.key(0), x, train=False)
        return model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])[1]

    inter = jax.eval_shape(run, x)["intermediates"]
    size = {name: inter[name]["__call__"][0].shape[1:] for name in inter if name != "__call__"}
    # (112 - 3) / 2 + 1 = 55.5 -> 56 and (56 - 3) / 2 + 1 = 27.5 -> 28 only with ceil_mode=True.
    assert layers.conv_output_size(112, 3, stride=2) == 55
    assert size["maxpool1"] == (56, 56, 64) and size["maxpool2"] == (28, 28, 192)
    assert size["maxpool3"] == (14, 14, 480) and size["maxpool4"] == (7, 7, 832)
    assert size["inception3b"] == (28, 28, 480) and size["inception5b"] == (7, 7, 1024)


def test_inception_branch_widths():
    block = G.Inception(*G.INCEPTION["inception3a"])
    x = jax.ShapeDtypeStruct((1, 28, 28, 192), jnp.float32)
    y, variables = jax.eval_shape(lambda x: block.init_with_output(jax.random.key(0), x, train=False), x)
    assert y.shape == (1, 28, 28, 64 + 128 + 32 + 32)
    p = variables["params"]
    assert p["branch3_1"]["conv"]["kernel"].shape == (3, 3, 16, 32)  # torchvision's 3x3 "5x5" branch
    assert "bias" not in p["branch1"]["conv"] and set(p["branch1"]["bn"]) == {"scale", "bias"}


# LLVM optimisation level 0 halves XLA's CPU compile time of the training step (see test_resnet.py).
@pytest.mark.slow
def test_training_step_cifar_with_aux_heads(rng):
    model = models.create("googlenet", variant="cifar", aux_logits=True)
    x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    labels = jnp.array([1, 8])
    variables = random_variables(model, x, rng)  # an eval-mode init creates the aux heads' parameters too
    assert {"aux1", "aux2"} <= set(variables["params"])
    tx = optax.sgd(0.01, momentum=0.9)

    @partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(variables, x, labels):
        params, stats = variables["params"], variables["batch_stats"]

        def loss_fn(p):
            (logits, aux1, aux2), new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                                    mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            ce = lambda z: layers.cross_entropy(z, labels)
            return ce(logits) + 0.3 * (ce(aux1) + ce(aux2)), (logits, new["batch_stats"])  # the paper's weights

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new_params = optax.apply_updates(params, updates)
        eval_out = model.apply({"params": new_params, "batch_stats": new_stats}, x, train=False)
        return loss, logits, eval_out, grads

    loss, logits, eval_out, grads = run(variables, x, labels)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert logits.shape == (2, 10)
    assert not isinstance(eval_out, tuple) and eval_out.shape == (2, 10)  # eval: logits only
    assert np.all(np.isfinite(eval_out))
    # The auxiliary losses reach the heads' parameters.
    assert np.any(grads["aux1"]["fc2"]["kernel"] != 0) and np.any(grads["aux2"]["conv"]["conv"]["kernel"] != 0)


def test_initialisation():
    # The auxiliary head holds every kind of layer of the network: BasicConv2d, and Dense with bias.
    head = G.InceptionAux(num_classes=5)
    params = jax.jit(lambda x: head.init(jax.random.key(0), x, train=False))(jnp.zeros((1, 4, 4, 192)))["params"]
    # torchvision: every conv/linear weight normal(0, 0.01) (trunc_normal_ cut at +-2 absolute = 200 std).
    np.testing.assert_allclose(float(jnp.std(params["fc1"]["kernel"])), 0.01, rtol=0.01)  # 2M samples
    np.testing.assert_allclose(float(jnp.std(params["conv"]["conv"]["kernel"])), 0.01, rtol=0.03)  # 24,576
    assert "bias" not in params["conv"]["conv"]
    bound = 1 / np.sqrt(1024)  # Linear bias: PyTorch's default U(-1/sqrt(in), 1/sqrt(in))
    assert 0.5 * bound < float(jnp.max(jnp.abs(params["fc2"]["bias"]))) <= bound
    assert np.all(params["conv"]["bn"]["scale"] == 1) and not np.any(params["conv"]["bn"]["bias"])


def test_bad_options():
    with pytest.raises(TypeError, match=r"googlenet: aux_logits must be a Python bool .* got int 1"):
        models.create("googlenet", aux_logits=1)
    with pytest.raises(ValueError, match=r"googlenet: unknown variant 'mnist'; expected one of \('imagenet', 'cifar'\)"):
        models.create("googlenet", variant="mnist")
    with pytest.raises(ValueError, match=r"googlenet: num_classes must be an int >= 1, got -1"):
        models.create("googlenet", num_classes=-1)
