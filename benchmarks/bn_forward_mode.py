"""Is the custom-JVP batch norm (forward mode works) as fast in training as the custom VJP it replaced?

    python -m benchmarks.bn_forward_mode                  # -> benchmarks/results/bn_forward_mode.json
    python -m benchmarks.bn_forward_mode --repeats 3 --out /tmp/bn.json

Until 2026-12-07 the training path of `layers.batch_norm` (no mask, no axis_name) was a `jax.custom_vjp`
with a closed-form backward, which made `jax.jvp`/`jax.jacfwd` through it fail. It is now a `jax.custom_jvp`
whose tangent map is written in the same closed form, so JAX's transpose of it is that backward. The old
custom VJP is kept here verbatim (`batch_norm_train_vjp`) to time both in one process, back to back:

- "bn": jitted `grad` of `sum(relu(bn(x)) * g) + sum(new_var)` with respect to x, scale and bias on `--bn-shape`
  ([128, 32, 32, 64], ResNet-18's first stage at batch 128), plus "reference": autodiff of the two-pass
  forward (`normalization.closed_form_derivative(False)`), the path neither uses.
- "resnet18": one jitted SGD training step (forward, backward, update, new batch statistics) of CIFAR
  ResNet-18 at `--batch` 32, the model traced with each `_batch_norm_train` in turn.

Each repeat times `--calls` synchronised calls per variant, variants alternated (rotated per repeat) so
the drift of a shared machine hits all alike; reported: per-repeat mean times, their median and min-max,
and the 1-minute load average before and after. All programs use `train.default_compiler_options()`.
Result (2026-12-07, 2-core x86 VM shared with other jobs, load 5.8-6.4, `--repeats 5 --calls 2`,
results/bn_forward_mode.json): BN+ReLU alone, median (min-max) ms: custom JVP 124.9 (103.9-137.9), old custom
VJP 90.5 (82.1-153.1), autodiff 155.6 (148.6-188.0): the JVP's transpose is ~1.4x slower than the hand-written
VJP, faster than autodiff (64 MiB of temporaries against 32; 13 fusions against 9). Whole ResNet-18 step,
batch 32: custom JVP 2419 (1575-2821) ms, old 2451 (1125-3010) ms: no difference within the noise (the step
is dominated by convolutions; 489 against 429 fusions, 210.4 against 209.4 MiB of temporaries). An earlier
run that (by a caching mistake) timed one program twice gave medians 9% apart: that is the noise here.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from jaxnets import layers, models
from jaxnets.checks import at_least_float32
from jaxnets.layers import normalization
from jaxnets.train import default_compiler_options


# ----------------------------------------------------------------------------------------------
# The custom VJP of `normalization._batch_norm_train` before 2026-12-07 (forward mode failed through it)
# ----------------------------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train_vjp(x, scale, bias, eps, axes):
    """`(y, mean [C], var [C])` as `normalization._batch_norm_train`, with the old closed-form custom VJP."""
    return closed_form_forward(x, scale, bias, eps, axes)[0]


def closed_form_forward(x, scale, bias, eps, axes):
    """The forward and the residuals `(x, mean, inv_std, scale, bias)` (kept-dims statistics)."""
    sdt = at_least_float32(x.dtype)
    x32 = x.astype(sdt)
    mean, var, _ = normalization.masked_moments(x32, axes)
    inv = jax.lax.rsqrt(var + eps)
    shape = mean.shape
    y = ((x32 - mean) * inv * jnp.reshape(scale, shape).astype(sdt) + jnp.reshape(bias, shape).astype(sdt))
    c = math.prod(shape)
    return (y.astype(x.dtype), mean.reshape(c), var.reshape(c)), (x, mean, inv, scale, bias)


def closed_form_backward(eps, axes, res, cotangents):
    """The closed-form backward (Ioffe & Szegedy 2015); see `normalization._batch_norm_train`."""
    del eps
    x, mean, inv, scale, bias = res
    dy, dmean, dvar = cotangents
    sdt = mean.dtype
    n = math.prod(x.shape[a] for a in axes)
    shape = mean.shape
    dy32 = dy.astype(sdt)
    centred = x.astype(sdt) - mean
    xhat = centred * inv
    dbias = jnp.sum(dy32, axis=axes, keepdims=True)
    dscale = jnp.sum(dy32 * xhat, axis=axes, keepdims=True)
    scale32 = jnp.reshape(scale, shape).astype(sdt)
    dx = (scale32 * inv / n) * (n * dy32 - dbias - xhat * dscale)
    dx = dx + jnp.reshape(dmean, shape).astype(sdt) / n + jnp.reshape(dvar, shape).astype(sdt) * (2.0 / n) * centred
    return (dx.astype(x.dtype), dscale.reshape(scale.shape).astype(scale.dtype),
            dbias.reshape(bias.shape).astype(bias.dtype))


batch_norm_train_vjp.defvjp(closed_form_forward, closed_form_backward)


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------
def traced_with(variant: str, fn, *args):
    """`fn` jitted and compiled for `args` with the batch-norm path `variant` ("new" | "old" | "reference")."""
    saved = normalization._batch_norm_train
    try:  # chosen at trace time: jit a fresh function per variant (jit's trace cache is keyed by the function)
        if variant == "old":  # the library's former custom VJP, kept here for the comparison
            normalization._batch_norm_train = batch_norm_train_vjp
        with normalization.closed_form_derivative(variant != "reference"):
            return jax.jit(lambda *a: fn(*a), compiler_options=default_compiler_options()).lower(*args).compile()
    finally:
        normalization._batch_norm_train = saved


def bn_programs(shape, variants):
    x = jax.random.normal(jax.random.key(0), shape)
    g = jax.random.normal(jax.random.key(1), shape)
    params = {"scale": jnp.full(shape[-1:], 1.1), "bias": jnp.full(shape[-1:], 0.1)}
    state = {"mean": jnp.zeros(shape[-1:]), "var": jnp.ones(shape[-1:])}

    def loss(x, params):
        y, new = layers.batch_norm(x, params, state, train=True)
        return jnp.sum(jax.nn.relu(y) * g) + jnp.sum(new["var"])
    return {v: traced_with(v, jax.grad(loss, (0, 1)), x, params) for v in variants}, (x, params)


def resnet_programs(batch, variants):
    model = models.create("resnet18", variant="cifar", num_classes=10)
    x = jax.random.normal(jax.random.key(0), (batch, 32, 32, 3))
    labels = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    variables = model.init(jax.random.key(2), x, train=False)
    opt = optax.sgd(0.01, momentum=0.9)
    opt_state = opt.init(variables["params"])

    def step(params, batch_stats, opt_state, x, labels):
        def loss(p):
            logits, new = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                      mutable=["batch_stats"])
            return jnp.mean(layers.cross_entropy(logits, labels)), new["batch_stats"]
        (value, new_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, value

    args = (variables["params"], variables["batch_stats"], opt_state, x, labels)
    return {v: traced_with(v, step, *args) for v in variants}, args


def program_stats(programs) -> dict:
    """Per variant: XLA's temporary buffer size (MiB) and the number of fusions of the compiled program."""
    return {v: {"temp_mib": p.memory_analysis().temp_size_in_bytes / 2**20, "fusions": p.as_text().count(" fusion(")}
            for v, p in programs.items()}


def alternate(programs, args, repeats: int, calls: int) -> dict[str, list[float]]:
    """Per-repeat mean ms of `calls` synchronised calls of each program, the order rotated per repeat."""
    names = list(programs)
    for name in names:  # first calls (allocation) untimed
        jax.block_until_ready(programs[name](*args))
    ms = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls):
                jax.block_until_ready(programs[name](*args))
            ms[name].append(1e3 * (time.perf_counter() - start) / calls)
    return ms


def summary(ms: dict[str, list[float]]) -> dict:
    return {name: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "per_repeat_ms": v}
            for name, v in ms.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bn-shape", default="128,32,32,64", help="NHWC shape of the batch-norm input")
    parser.add_argument("--batch", type=int, default=32, help="ResNet-18 (CIFAR) batch size")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per repeat and variant")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "bn_forward_mode.json"))
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.bn_shape.split(","))
    load_before = os.getloadavg()[0]
    results = {"config": vars(args), "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "versions": {"jax": jax.__version__},
               "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    programs, inputs = bn_programs(shape, ("new", "old", "reference"))
    grads = {v: p(*inputs) for v, p in programs.items()}
    results["bn_max_gradient_difference_new_vs_old"] = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads["new"]), jax.tree.leaves(grads["old"])))
    results["bn_programs"] = program_stats(programs)
    results["bn"] = summary(alternate(programs, inputs, args.repeats, args.calls))
    print("bn", shape, results["bn_programs"], results["bn_max_gradient_difference_new_vs_old"], {k: round(v["median_ms"], 2) for k, v in results["bn"].items()}, flush=True)
    if not args.skip_resnet:
        programs, inputs = resnet_programs(args.batch, ("new", "old"))
        results["resnet18_programs"] = program_stats(programs)
        results["resnet18"] = summary(alternate(programs, inputs, args.repeats, args.calls))
        print("resnet18 batch", args.batch, {k: round(v["median_ms"], 2) for k, v in results["resnet18"].items()})
    results["load_average_1min"] = [load_before, os.getloadavg()[0]]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
