"""Does a fused BatchNorm+ReLU custom VJP beat `layers.batch_norm` followed by a ReLU? (It does not.)

    python -m benchmarks.bn_relu_fusion                    # [128, 32, 32, 64], ResNet-18's first stage
    python -m benchmarks.bn_relu_fusion --shape 128,8,8,256 --repeats 7

Both variants compute training-mode batch norm over N, H, W and a ReLU, forward and backward (gradients
with respect to x, scale and bias of `sum(relu(bn(x)) * x)`), jitted with `train.default_compiler_options()`:

- "separate": the closed-form BatchNorm custom VJP (`benchmarks.bn_forward_mode.batch_norm_train_vjp`, the
  library's path until it became a custom JVP) then
  `jax.nn.relu`, whose backward XLA fuses into the batch-norm backward's elementwise pass.
- "fused": one custom VJP whose forward applies the ReLU and whose backward recomputes the
  pre-activation from the saved input to mask the cotangent, then runs the same closed-form backward.
  Residuals are the same (x and per-channel vectors), so it saves no memory either.

Prints the gradients' largest difference (they are computed by the same formulas: 0 expected) and, per
variant, the sorted per-repeat mean times of `--calls` synchronised calls, variants alternated per repeat.
Result (2026-12-04, 2-core AMD EPYC, load 1.0-1.4): `--repeats 9`: separate 45.9-60.7 ms (median 53.9),
fused 45.7-60.0 ms (median 53.9); `--shape 128,8,8,256`: separate 2.9-4.9 ms (median 4.0), fused 2.5-4.0 ms
(median 3.9). No difference beyond the noise, so jaxnets keeps BatchNorm and ReLU separate
(benchmarks/README.md, "Speed work").
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from benchmarks import bn_forward_mode
from jaxnets.train import default_compiler_options


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _bn_relu(x, scale, bias, eps, axes):
    return _bn_relu_fwd(x, scale, bias, eps, axes)[0]


def _bn_relu_fwd(x, scale, bias, eps, axes):
    (y, mean, var), residuals = bn_forward_mode.closed_form_forward(x, scale, bias, eps, axes)
    return (jnp.maximum(y, 0), mean, var), residuals


def _bn_relu_bwd(eps, axes, residuals, cotangents):
    x, mean, inv_std, scale, bias = residuals
    dy, dmean, dvar = cotangents
    shape = mean.shape
    pre_activation = (x.astype(mean.dtype) - mean) * inv_std * jnp.reshape(scale, shape) + jnp.reshape(bias, shape)
    dy = jnp.where(pre_activation > 0, dy, 0)
    return bn_forward_mode.closed_form_backward(eps, axes, residuals, (dy, dmean, dvar))


_bn_relu.defvjp(_bn_relu_fwd, _bn_relu_bwd)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shape", default="128,32,32,64", help="NHWC shape of the activation")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per repeat")
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    axes = tuple(range(len(shape) - 1))
    x = jax.random.normal(jax.random.key(0), shape)
    scale, bias = jnp.full(shape[-1:], 1.1), jnp.full(shape[-1:], 0.1)

    def separate(x, scale, bias):
        y, _, _ = bn_forward_mode.batch_norm_train_vjp(x, scale, bias, 1e-5, axes)
        return jnp.sum(jax.nn.relu(y) * x)

    def fused(x, scale, bias):
        y, _, _ = _bn_relu(x, scale, bias, 1e-5, axes)
        return jnp.sum(y * x)

    options = default_compiler_options()
    variants = {name: jax.jit(jax.grad(f, (0, 1, 2)), compiler_options=options)
                for name, f in (("separate", separate), ("fused", fused))}
    want, got = variants["separate"](x, scale, bias), variants["fused"](x, scale, bias)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(want, got))
    print(f"shape {shape}: largest gradient difference {diff:.3g}")
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, f in variants.items():
            jax.block_until_ready(f(x, scale, bias))
            start = time.perf_counter()
            for _ in range(args.calls):
                jax.block_until_ready(f(x, scale, bias))
            times[name].append((time.perf_counter() - start) / args.calls * 1e3)
    for name, ms in times.items():
        print(f"{name:>8}: {', '.join(f'{t:.1f}' for t in sorted(ms))} ms per forward+backward")
    return {"max_gradient_difference": diff, "ms": times}


if __name__ == "__main__":
    main()
