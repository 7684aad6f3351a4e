"""layers.conv under jax.vmap over inputs AND kernels (a population of models), layers/population.py.

Every formulation ("auto", "loop", "taps", "grouped") must equal a Python loop of single convolutions,
forward and gradients. Tolerances: float32 rtol = atol = 1e-5 (the formulations sum the same products in
another order: "taps" adds tap by tap, the loop and "grouped" run other XLA kernels; the longest sum here
has C_in * prod(kernel) <= 50 terms, or N * prod(out) <= 2 * 64 for the weight gradient, of O(1) values);
float64 1e-12. Outside vmap, with `cpu_formulations(False)`, the program is lax.conv_general_dilated's:
bitwise equal results (the CPU formulations are tested in test_conv_formulations.py).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxnets.layers import conv, linear
from jaxnets.layers.conv_formulations import cpu_formulations
from jaxnets.layers.population import MODES, member_convolutions

RTOL = ATOL = 1e-5
R = 3  # members

# (id, x shape of one member, kernel shape of one member, conv kwargs)
CASES = [
    ("lenet_first_1ch_pad2", (2, 8, 8, 1), (5, 5, 1, 6), dict(padding=2)),  # "auto" takes taps here
    ("2ch_stride_dilation_asym", (2, 9, 8, 2), (3, 2, 2, 4), dict(stride=(2, 1), dilation=(1, 2),
                                                                   padding=((1, 2), (0, 1)))),
    ("6ch_valid", (2, 7, 7, 6), (3, 3, 6, 5), dict()),  # more channels than the taps limit: loop
    ("groups", (2, 6, 6, 4), (3, 3, 2, 6), dict(groups=2, padding=1)),
    ("nchw", (2, 3, 7, 6), (4, 3, 3, 3), dict(padding=1, stride=2, layout="NCHW")),
    ("1d", (2, 11, 2), (3, 2, 3), dict(padding="SAME")),
    ("3d", (2, 5, 4, 4, 1), (2, 3, 2, 1, 2), dict(padding=(1, 0, 1))),
]


def _members(case, dtype, bias=True):
    _, x_shape, k_shape, kw = case
    keys = jax.random.split(jax.random.key(0), 4)
    c_out = k_shape[0] if kw.get("layout") == "NCHW" else k_shape[-1]
    x = jax.random.normal(keys[0], (R, *x_shape), dtype)
    k = jax.random.normal(keys[1], (R, *k_shape), dtype) * 0.5
    b = jax.random.normal(keys[2], (R, c_out), dtype) if bias else None
    return x, k, b, keys[3], kw


def _loss(kw, cot_key):
    def loss(x, k, b):
        y = conv(x, k, b, **kw)
        g = jax.random.normal(cot_key, y.shape, y.dtype)  # a fixed cotangent of y
        return jnp.sum(jnp.tanh(y) * g), y
    return loss


def _reference(case, dtype):
    """A Python loop over the members of single (unbatched) convolutions: output and gradients (computed once
    per case and dtype: every formulation is compared with the same reference)."""
    return _loop_of_single_convs(CASES.index(case), jnp.dtype(dtype).name)


@functools.lru_cache(maxsize=None)
def _loop_of_single_convs(index, dtype):
    x, k, b, cot_key, kw = _members(CASES[index], dtype)
    grad = jax.jit(jax.grad(_loss(kw, cot_key), argnums=(0, 1, 2), has_aux=True))
    outs = [grad(x[r], k[r], b[r]) for r in range(R)]
    return (jnp.stack([o[1] for o in outs]),) + tuple(jnp.stack([o[0][i] for o in outs]) for i in range(3))


def _population(case, dtype, mode):
    x, k, b, cot_key, kw = _members(case, dtype)
    with member_convolutions(mode):
        grads, y = jax.jit(jax.vmap(jax.grad(_loss(kw, cot_key), argnums=(0, 1, 2), has_aux=True)))(x, k, b)
    return (y,) + tuple(grads)


# The fast loop runs one case per formulation (taps, loop, grouped convolutions); the whole matrix is slow.
FAST = {("lenet_first_1ch_pad2", "auto"), ("6ch_valid", "auto"), ("groups", "grouped")}


def _matrix(cases, modes):
    return [pytest.param(case, mode, id=f"{case[0]}-{mode}",
                         marks=() if (case[0], mode) in FAST else (pytest.mark.slow,))
            for case in cases for mode in modes]


@pytest.mark.parametrize("case,mode", _matrix(CASES, MODES))
def test_vmapped_conv_and_gradients_equal_a_loop_of_single_convs(case, mode):
    for name, got, want in zip(("y", "dx", "dkernel", "dbias"), _population(case, jnp.float32, mode),
                               _reference(case, jnp.float32)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} ({mode})")


@pytest.mark.slow  # the float32 matrix above keeps one fast case per formulation
@pytest.mark.parametrize("case,mode", _matrix(CASES[:3], ("auto", "loop", "taps")))
def test_vmapped_conv_float64(case, mode, x64):
    for name, got, want in zip(("y", "dx", "dkernel", "dbias"), _population(case, jnp.float64, mode),
                               _reference(case, jnp.float64)):
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=f"{name} ({mode})")


def _plain(x, k, **kw):
    return lax.conv_general_dilated(x, k, (2, 1), ((1, 2), (0, 1)), rhs_dilation=(1, 2),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), **kw)


def test_unbatched_conv_is_the_plain_lax_program_bitwise():
    x, k, _, _, kw = _members(CASES[1], jnp.float32)
    with cpu_formulations(False):  # else a 2-channel data gradient is computed through patches (on CPU)
        _assert_plain_program(x[0], k[0], kw)


def _assert_plain_program(x, k, kw):
    """`conv(x, k, **kw)`, its value and gradients, is `_plain`'s program: bitwise, the same convolutions."""
    ours = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k, **kw))), argnums=(0, 1)))
    plain = jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(_plain(x, k))), argnums=(0, 1)))
    for got, want in zip(jax.tree.leaves(ours(x, k)), jax.tree.leaves(plain(x, k))):
        np.testing.assert_array_equal(got, want)
    text = ours.lower(x, k).compile().as_text()
    assert text.count("convolution(") == plain.lower(x, k).compile().as_text().count("convolution(") == 3


def _grouped_convs(fn, *args) -> int:
    """Number of grouped convolutions (feature or batch group count R) in the lowered program."""
    text = jax.jit(fn).lower(*args).as_text()
    return text.count(f"feature_group_count = {R}") + text.count(f"batch_group_count = {R}")


def test_population_gradient_has_no_grouped_convolution():
    x, k, b, cot_key, kw = _members(CASES[2], jnp.float32)

    def step():  # a new function each time: jit caches traces per function, and the mode is read at trace time
        return jax.vmap(jax.grad(_loss(kw, cot_key), argnums=(0, 1, 2), has_aux=True))

    assert _grouped_convs(step(), x, k, b) == 0
    with member_convolutions("grouped"):  # JAX's own rule: the grouped convolutions this module avoids
        assert _grouped_convs(step(), x, k, b) >= 2
    assert _grouped_convs(step(), x, k, b) == 0  # the block restored "auto"


@pytest.mark.parametrize("mode", ("auto", "loop"))
def test_forward_mode_and_second_order_through_a_population(mode):
    x, k, _, cot_key, kw = _members(CASES[0], jnp.float32)
    loss = lambda x, k: _loss(kw, cot_key)(x, k, None)[0]
    t = jax.random.normal(jax.random.key(7), k.shape[1:])

    def per_member(x, k):  # jvp of the kernel gradient along t: a Hessian-vector product
        grad = jax.grad(loss, argnums=1)
        return jax.jvp(lambda k_: grad(x, k_), (k,), (t,))[1], jax.grad(lambda k_: jnp.sum(grad(x, k_) ** 2))(k)

    with member_convolutions(mode):
        got = jax.jit(jax.vmap(per_member))(x, k)
    for r in range(R):
        for g, w in zip(got, jax.jit(per_member)(x[r], k[r])):
            np.testing.assert_allclose(g[r], w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mapped", ("x", "kernel"))
def test_vmap_over_one_argument_equals_a_loop(mapped):
    x, k, b, _, kw = _members(CASES[0], jnp.float32)
    if mapped == "x":
        got = jax.jit(jax.vmap(lambda x_: conv(x_, k[0], b[0], **kw)))(x)
        want = [conv(x[r], k[0], b[0], **kw) for r in range(R)]
    else:
        got = jax.jit(jax.vmap(lambda k_: conv(x[0], k_, b[0], **kw)))(k)
        want = [conv(x[0], k[r], b[0], **kw) for r in range(R)]
    np.testing.assert_allclose(got, jnp.stack(want), rtol=RTOL, atol=ATOL)


def test_vmapped_linear_is_one_batched_matmul():
    x = jax.random.normal(jax.random.key(0), (R, 4, 5))
    kernel = jax.random.normal(jax.random.key(1), (R, 5, 3))
    jaxpr = jax.make_jaxpr(jax.vmap(linear))(x, kernel)
    dots = [e for e in jaxpr.eqns if e.primitive.name == "dot_general"]
    assert len(dots) == 1
    (_, _), (batch_lhs, batch_rhs) = dots[0].params["dimension_numbers"]
    assert tuple(batch_lhs) == (0,) and tuple(batch_rhs) == (0,)
    np.testing.assert_allclose(jax.vmap(linear)(x, kernel), jnp.stack([x[r] @ kernel[r] for r in range(R)]),
                               rtol=RTOL, atol=ATOL)


def test_member_convolutions_rejects_bad_modes():
    with pytest.raises(ValueError, match="member_convolutions: unknown mode .fast."), member_convolutions("fast"):
        pass
    with pytest.raises(TypeError, match="member_convolutions: mode must be a string"), member_convolutions(1):
        pass



@pytest.mark.parametrize("check_vma", (True, False))
def test_conv_inside_shard_map_equals_lax(check_vma):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P
    mesh = jax.make_mesh((1,), ("b",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
    x, k, _, _, kw = _members(CASES[1], jnp.float32)
    x, k = jax.device_put(x[0], NamedSharding(mesh, P("b"))), jax.device_put(k[0], NamedSharding(mesh, P()))

    def grads(fn):
        def body(x, k):
            gx, gk = jax.grad(lambda x, k: jnp.sum(fn(x, k) ** 2), argnums=(0, 1))(x, k)
            return gx, jax.lax.psum(gk, "b")
        return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("b"), P()), out_specs=(P("b"), P()),
                                     check_vma=check_vma))(x, k)

    for got, want in zip(grads(lambda x, k: conv(x, k, **kw)), grads(_plain)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
