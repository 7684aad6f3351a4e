"""The convolution's primitives: their derivatives, their batching rules for a population of models, their lowering.

A population (several seeds or hyperparameter settings trained as one program) is `jax.vmap` of the
single-run training step over a leading run axis R: every member has its own inputs and its own
kernels. JAX's batching rule of `lax.conv_general_dilated` turns such a convolution into ONE grouped
convolution (`feature_group_count = R * groups` forward, `batch_group_count = R` for the weight
gradient), which XLA's CPU backend runs far slower than the R convolutions one by one (the measurements
are in benchmarks/README.md, "Populations"). `conv_general` is `lax.conv_general_dilated` (the same
program, the same numbers and the same derivatives) under every transformation except `vmap` over
BOTH the input and the kernel; there it computes each of the three parts of a convolution (forward,
data gradient, weight gradient) in the formulation chosen for it:

  "loop":    one convolution per member (the single run's kernels, R times in one program);
  "taps":    forward only, channels-last, `groups=1`: the sum over kernel taps and input channels of the
             shifted input times that tap's weights, elementwise multiply-adds that XLA fuses into one
             loop; used where the input has few channels (a first layer: LeNet-5's 1 -> 6 convolution);
  "grouped": JAX's own batching rule (the grouped convolution).

`member_convolutions(mode)` forces one formulation for tests and benchmarks; the default "auto" takes,
when JAX's default backend is the CPU, "taps" for the forward pass of a channels-last convolution with
`groups=1` and at most `TAPS_MAX_INPUT_CHANNELS` input channels and "loop" for everything else; on GPU and
TPU it keeps "grouped" (their compilers run grouped convolutions natively, and R small convolutions would
leave most of the chip idle; not measured here). Under `vmap` over the input
alone (a batch of inputs, one model) or the kernel alone, JAX's own rule runs (it folds the mapped axis
into the batch or the output channels: one ungrouped convolution).

The three parts are primitives of their own (`conv_forward`, `conv_data_gradient`,
`conv_weight_gradient`), each bilinear and each the transpose of the others: the derivative of any of
them is a sum of the three, so `grad`, `jvp`, `jacfwd`, `hessian` and `vmap` compose in any order and a
vmapped gradient reaches these rules. Their lowering is the plain `lax` computation on GPU and TPU (outside
`vmap` the compiled program is exactly `lax.conv_general_dilated`'s and its autodiff transposes) and, on CPU,
the formulations of `layers/conv_formulations.py` where XLA's CPU convolution is slow (few input channels,
strides; the same numbers up to float rounding; `conv_formulations.cpu_formulations(False)` gives the plain
program on CPU too). With `vmap`
outermost (`jax.vmap(train_step)`) every part gets its rule; under `jax.grad(jax.vmap(f))` the batched
forward pass is differentiated by JAX, so a "taps" forward pass gets JAX's derivative of its sum over
taps (correct, but its weight gradient is slower than "loop").
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxnets.checks import check_choice
from jaxnets.layers.conv_formulations import (channels_last_ungrouped, cpu_data_gradient, cpu_forward,
                                               cpu_weight_gradient, formulations_enabled, plain_data_gradient,
                                               plain_forward, plain_weight_gradient, taps_forward)

MODES = ("auto", "loop", "taps", "grouped")
# "auto" computes the forward pass by taps up to this many input channels: by measurement (benchmarks/README.md,
# "Populations") taps win for LeNet-5's 1-channel first layer and lose for its 6-channel second one.
TAPS_MAX_INPUT_CHANNELS = 3
_MODE = "auto"


@contextlib.contextmanager
def member_convolutions(mode: str):
    """Within the block, `conv_general` under `vmap` over input and kernel uses the formulation `mode`:
    "auto" (the default, see the module docstring), "loop", "taps" (where it applies; elsewhere "loop")
    or "grouped" (JAX's own rule). Read at TRACE time: a function jitted inside the block keeps the
    choice. For tests and benchmarks (the same numbers up to float rounding, other XLA kernels).

    Raises: ValueError for an unknown mode, TypeError for a non-string one.
    """
    global _MODE
    mode, previous = check_choice("member_convolutions", "mode", mode, MODES), _MODE
    _MODE = mode
    try:
        yield
    finally:
        _MODE = previous


def conv_general(x: jax.Array, kernel: jax.Array, *, strides: Sequence[int], padding: Sequence[tuple[int, int]],
                 dilation: Sequence[int], dimension_numbers: tuple[str, str, str], groups: int) -> jax.Array:
    """`lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
    dimension_numbers=dimension_numbers, feature_group_count=groups)`, with this module's batching rules.

    Args:
      x, kernel: arrays of one floating dtype, laid out as `dimension_numbers` says.
      strides, dilation: one int per spatial dim. padding: one `(low, high)` pair of ints per spatial dim.
      dimension_numbers: `(lhs_spec, rhs_spec, out_spec)` strings, e.g. `("NHWC", "HWIO", "NHWC")`.
      groups: the feature group count.
    Returns: the convolution, as `lax.conv_general_dilated` computes it. The arguments are not checked
      here: `layers.conv` checks them and is the function to call. Inside `jax.shard_map` with
      `check_vma=True` (operands that vary over manual mesh axes) this is plain `lax.conv_general_dilated`:
      a population there gets JAX's grouped convolutions.
    """
    if any(_varying_manual_axes(a) for a in (x, kernel)):
        # Inside jax.shard_map with check_vma=True: JAX's own convolution (these primitives do not track the
        # mesh axes their operands vary over).
        return plain_forward(x, kernel, strides=tuple(strides), padding=tuple(padding), dilation=tuple(dilation),
                             dimension_numbers=tuple(dimension_numbers), groups=groups)
    return conv_forward_p.bind(x, kernel, **_params(strides, padding, dilation, dimension_numbers, groups,
                                                    formulations_enabled()))


def _varying_manual_axes(a: jax.Array) -> frozenset:
    """The manual mesh axes `a` varies over inside `jax.shard_map` (empty outside)."""
    aval = jax.typeof(a)
    if hasattr(aval, "manual_axis_type"):  # jax >= 0.9
        return aval.manual_axis_type.varying
    return aval.vma  # jax 0.8


def _params(strides, padding, dilation, dimension_numbers, groups, cpu_formulations: bool) -> dict:
    return {"strides": tuple(int(s) for s in strides), "padding": tuple((int(lo), int(hi)) for lo, hi in padding),
            "dilation": tuple(int(d) for d in dilation), "dimension_numbers": tuple(dimension_numbers),
            "groups": int(groups), "cpu_formulations": bool(cpu_formulations)}


conv_forward_p = Primitive("jaxnets_conv_forward")
conv_data_gradient_p = Primitive("jaxnets_conv_data_gradient")
conv_weight_gradient_p = Primitive("jaxnets_conv_weight_gradient")
_PLAIN = {conv_forward_p: plain_forward, conv_data_gradient_p: plain_data_gradient,
          conv_weight_gradient_p: plain_weight_gradient}
_CPU = {conv_forward_p: cpu_forward, conv_data_gradient_p: cpu_data_gradient,
        conv_weight_gradient_p: cpu_weight_gradient}


def _abstract_eval(plain, a, b, **params):
    out = jax.eval_shape(functools.partial(plain, **params), jax.ShapeDtypeStruct(a.shape, a.dtype),
                         jax.ShapeDtypeStruct(b.shape, b.dtype))
    return jax.core.ShapedArray(out.shape, out.dtype)


# Transposes. With <., .> the sum of elementwise products and F = forward, D = data gradient, W = weight
# gradient, all three are views of the one trilinear form <g, F(x, k)> = <D(g, k), x> = <W(x, g), k>, so
# F's transposes are D (in x) and W (in k), D's are F (in g) and W (in k), W's are D (in x) and F (in g).
def _shape(arg):
    return tuple(arg.aval.shape)


def _forward_t_x(ct, x, kernel, **params):
    return conv_data_gradient_p.bind(ct, kernel, x_shape=_shape(x), **params)


def _forward_t_kernel(ct, x, kernel, **params):
    return conv_weight_gradient_p.bind(x, ct, kernel_shape=_shape(kernel), **params)


def _data_gradient_t_g(ct, g, kernel, *, x_shape, **params):
    return conv_forward_p.bind(ct, kernel, **params)


def _data_gradient_t_kernel(ct, g, kernel, *, x_shape, **params):
    return conv_weight_gradient_p.bind(ct, g, kernel_shape=_shape(kernel), **params)


def _weight_gradient_t_x(ct, x, g, *, kernel_shape, **params):
    return conv_data_gradient_p.bind(g, ct, x_shape=_shape(x), **params)


def _weight_gradient_t_g(ct, x, g, *, kernel_shape, **params):
    return conv_forward_p.bind(x, ct, **params)


# ----------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------
def _taps_applies(prim, params, kernel_shape) -> bool:
    """The taps formulation exists for the forward pass of a channels-last convolution with groups=1."""
    return prim is conv_forward_p and channels_last_ungrouped(params, kernel_shape)


def _formulation(prim, params, kernel_shape) -> str:
    taps = _taps_applies(prim, params, kernel_shape)
    if _MODE == "auto":
        if jax.default_backend() != "cpu":
            return "grouped"  # GPU and TPU run grouped convolutions natively (cuDNN, the TPU's convolution units)
        return "taps" if taps and kernel_shape[-2] <= TAPS_MAX_INPUT_CHANNELS else "loop"
    return "loop" if _MODE == "taps" and not taps else _MODE


def _batch_rule(prim, args, dims, **params):
    a, b = args
    da, db = dims
    # b: the kernel of the forward pass, the only part with a taps formulation
    how = "grouped" if da is None or db is None else _formulation(prim, params, b.shape[:db] + b.shape[db + 1:])
    if how == "grouped":
        # JAX's own rule: with one side mapped it folds the axis into the batch or the feature dimension
        # (one ungrouped convolution); with both, a grouped convolution.
        return jax.vmap(functools.partial(_PLAIN[prim], **params), in_axes=(da, db))(a, b), 0
    a, b = jnp.moveaxis(a, da, 0), jnp.moveaxis(b, db, 0)
    if how == "taps":
        return jax.vmap(functools.partial(taps_forward, **params))(a, b), 0
    return jnp.stack([prim.bind(a[i], b[i], **params) for i in range(a.shape[0])]), 0


for _prim, _t_a, _t_b in ((conv_forward_p, _forward_t_x, _forward_t_kernel),
                          (conv_data_gradient_p, _data_gradient_t_g, _data_gradient_t_kernel),
                          (conv_weight_gradient_p, _weight_gradient_t_x, _weight_gradient_t_g)):
    _plain = _PLAIN[_prim]
    _prim.def_impl(functools.partial(lambda plain, *args, **params: plain(*args, **params), _plain))
    _prim.def_abstract_eval(functools.partial(_abstract_eval, _plain))
    mlir.register_lowering(_prim, mlir.lower_fun(
        functools.partial(lambda plain, *args, **params: plain(*args, **params), _plain), multiple_results=False))
    # on CPU, the formulations of conv_formulations.py where they apply (the numbers up to float rounding)
    mlir.register_lowering(_prim, mlir.lower_fun(
        functools.partial(lambda cpu, *args, **params: cpu(*args, **params), _CPU[_prim]), multiple_results=False),
        platform="cpu")
    ad.defbilinear(_prim, _t_a, _t_b)
    batching.primitive_batchers[_prim] = functools.partial(_batch_rule, _prim)
