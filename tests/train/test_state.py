"""TrainState.create(variables=): training from given weights (copies that survive donation, checked
against the model's own tree, cast to its dtype, rng from the seed), and the layout errors
(`TrainState.check_input`, `jaxnets.checks.check_input_layout`)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets.nn as jnn
from jaxnets.checks import check_input_layout
from jaxnets.train import compile_steps
from jaxnets.train.state import TrainState


class Net(nn.Module):
    """conv-BN-ReLU-pool-Dense in either layout."""

    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x, *, train):
        x = jnn.Conv(4, 3, padding=1, use_bias=False, layout=self.layout, name="conv")(x)
        x = jnn.ReLU()(jnn.BatchNorm(layout=self.layout, name="bn")(x, train=train))
        x = jnn.MaxPool(2, layout=self.layout)(x)
        return jnn.Dense(3, name="fc")(jnn.Flatten(layout=self.layout)(x))


NHWC = (1, 8, 8, 3)
NCHW = (1, 3, 8, 8)


def given(layout="NHWC", seed=1):
    """Variables as from_torch would return them: random jax arrays, with non-trivial BN statistics."""
    shape = NHWC if layout == "NHWC" else NCHW
    v = Net(layout).init(jax.random.key(seed), jnp.zeros(shape), train=False)
    v = jax.tree.map(lambda a: a + 0.5, v)  # statistics away from their initial 0 / 1
    return {"params": v["params"], "batch_stats": v["batch_stats"]}


def _equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)))


def test_starts_from_the_given_variables():
    v = given()
    state = TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=v)
    assert _equal(state.params, v["params"]) and _equal(state.batch_stats, v["batch_stats"])
    assert int(state.step) == 0 and state.input_shape == (8, 8, 3)
    # The key still comes from the seed, as without variables.
    fresh = TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0)
    assert np.array_equal(jax.random.key_data(state.rng), jax.random.key_data(fresh.rng))
    assert not _equal(fresh.params, v["params"])


def test_copies_survive_a_donating_compiled_step(rng):
    v = given()
    before = jax.tree.map(np.asarray, v)
    state = TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=v)
    steps = compile_steps("none", donate=True)
    batch = {"image": rng.standard_normal((4, 8, 8, 3)).astype(np.float32), "label": np.array([0, 1, 2, 0])}
    new, _ = steps.train(state, steps.put_batch(batch))  # the state itself is donated, not a put_state copy
    jax.block_until_ready(new)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))  # donation happened
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(v))          # the user's arrays are intact
    assert _equal(v, before)
    assert not _equal(new.params, before["params"])  # and the step trained


def test_params_only_and_bare_params_tree():
    v = given()
    for variables in ({"params": v["params"]}, v["params"]):
        state = TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=variables)
        assert _equal(state.params, v["params"])
        np.testing.assert_array_equal(state.batch_stats["bn"]["mean"], np.zeros(4))  # initial BN statistics
        np.testing.assert_array_equal(state.batch_stats["bn"]["var"], np.ones(4))


def test_cast_to_the_model_dtype():
    v = jax.tree.map(lambda a: np.asarray(a, np.float64), given())  # numpy float64, e.g. from a torch double model
    state = TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=v)
    assert {leaf.dtype for leaf in jax.tree.leaves((state.params, state.batch_stats))} == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(state.params["fc"]["kernel"], v["params"]["fc"]["kernel"], rtol=1e-7)


def test_variables_that_do_not_fit_are_listed():
    v = given()
    v["params"]["fc"]["kernel"] = jnp.zeros((64, 5))
    del v["params"]["fc"]["bias"]
    v["params"]["extra"] = {"kernel": jnp.zeros(2)}
    v["batch_stats"]["bn"]["mean"] = jnp.zeros(4, jnp.int32)
    with pytest.raises(ValueError) as info:
        TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=v)
    message = str(info.value)
    assert message.startswith("TrainState.create: variables do not fit the model initialised on sample_input of "
                              "shape (1, 8, 8, 3) (4 problems): ")
    for piece in ("missing params/fc/bias", "unexpected params/extra/kernel",
                  "params/fc/kernel has shape (64, 5), the model needs (64, 3)",
                  "batch_stats/bn/mean has dtype int32, the model needs a floating dtype (float32)"):
        assert piece in message
    with pytest.raises(TypeError, match=r"TrainState.create: variables must be a mapping .* got list"):
        TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=[1])


def test_nchw_sample_for_nhwc_variables():
    with pytest.raises(ValueError, match=r"TrainState.create: sample_input of shape \(1, 3, 8, 8\) looks like NCHW but "
                                         r"the model was initialised for NHWC inputs \[N, 8, 8, 3\]; convert the batch "
                                         r"with jnp.moveaxis\(x, 1, -1\)"):
        TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NCHW), 0, variables=given())


def test_nhwc_sample_for_nchw_variables():
    v = given("NCHW")
    with pytest.raises(ValueError, match=r"TrainState.create: sample_input of shape \(1, 8, 8, 3\) looks like NHWC but "
                                         r"the model was initialised for NCHW inputs \[N, 3, 8, 8\]; convert the batch "
                                         r"with jnp.moveaxis\(x, -1, 1\)"):
        TrainState.create(Net("NCHW"), optax.sgd(0.1), jnp.zeros(NHWC), 0, variables=v)
    state = TrainState.create(Net("NCHW"), optax.sgd(0.1), jnp.zeros(NCHW), 0, variables=v)
    assert _equal(state.params, v["params"])


def test_check_input_before_tracing():
    state = TrainState.create(Net(), optax.sgd(0.1), jnp.zeros(NHWC), 0)
    state.check_input("fit", "batch['image']", (16, 8, 8, 3))   # the same layout: nothing
    state.check_input("fit", "batch['image']", (16, 12, 12, 3))  # another size: left to the model
    with pytest.raises(ValueError, match=r"fit: batch\['image'\] of shape \(16, 3, 8, 8\) looks like NCHW but the "
                                         r"model was initialised for NHWC inputs \[N, 8, 8, 3\]"):
        state.check_input("fit", "batch['image']", (16, 3, 8, 8))
    state.replace(input_shape=None).check_input("fit", "x", (16, 3, 8, 8))  # a hand-built state: no check


@pytest.mark.parametrize("shape, expected, layout, match", [
    ((2, 3, 32, 32), (32, 32, 3), None, r"looks like NCHW but the model was initialised for NHWC"),
    ((2, 32, 32, 3), (3, 32, 32), None, r"looks like NHWC but the model was initialised for NCHW"),
    ((2, 3, 64, 64), (32, 32, 3), "NHWC", r"looks like NCHW .* jnp.moveaxis\(x, 1, -1\)"),
    ((2, 64, 64, 3), (3, 32, 32), "NCHW", r"looks like NHWC .* jnp.moveaxis\(x, -1, 1\)"),
    ((2, 5, 100), (100, 5), None, r"looks like NCW but the model was initialised for NWC inputs \[N, 100, 5\]"),
])
def test_check_input_layout_raises(shape, expected, layout, match):
    with pytest.raises(ValueError, match=r"f: x of shape .*" + match):
        assert check_input_layout("f", "x", shape, expected, layout=layout) is None  # raises on a layout mix-up


@pytest.mark.parametrize("shape, expected, layout", [
    ((2, 32, 32, 3), (32, 32, 3), None),    # as initialised
    ((2, 3, 64, 64), (32, 32, 3), None),    # not an exact transpose and no layout given: left to the model
    ((2, 64, 64, 3), (32, 32, 3), "NHWC"),  # another image size, same layout
    ((2, 3, 3, 3), (3, 3, 3), "NHWC"),      # cannot tell
    ((2, 10), (10,), None),                  # not an image
])
def test_check_input_layout_passes(shape, expected, layout):
    assert check_input_layout("f", "x", shape, expected, layout=layout) is None  # raises on a layout mix-up
