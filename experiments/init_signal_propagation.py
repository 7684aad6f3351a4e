"""How does the initialization scale carry activations and gradients through a deep MLP?

A plain MLP of ``depth`` square layers (``width`` units, no biases, as in the Xavier and He papers) is fed
a batch of standard-normal inputs, once per nonlinearity (tanh, sigmoid, ReLU) and initialization:
N(0, 1), N(0, 1e-4) (std 1e-2), LeCun (variance 1/fan_in), Xavier (2/(fan_in + fan_out)), Xavier with
PyTorch's gain for the nonlinearity (tanh 5/3, sigmoid 1, ReLU sqrt 2) and He (2/fan_in). Per layer it
records the standard deviation of the activations, the fraction of saturated units, and the norm of the
gradient of a loss with respect to that layer's weights. The loss is a fixed random linear readout,
``L = sum(r * y) / batch`` with ``r ~ N(0, 1)``: its gradient ``dL/dy = r / batch`` is the same for every
run, so any growth or decay of the gradients comes from the layers alone.

Theory (LeCun, Glorot & Bengio, He et al.; the course notes): a layer maps the second moment of its input
``E[x^2]`` to a pre-activation variance ``q = fan_in * Var(w) * E[x^2]``. So N(0, 1) multiplies it by
``fan_in`` (explodes; tanh and sigmoid saturate), std 1e-2 by ``fan_in * 1e-4 = 0.1`` (vanishes), LeCun
keeps it for a linear(-ish) unit, and ReLU halves the second moment (``E[relu(z)^2] = q / 2``), which He's
factor 2 undoes while LeCun loses a factor 2 per layer. For square layers Xavier IS LeCun
(``fan_in = fan_out``); with the same keys their weights are identical. The dashed lines are the
infinite-width prediction of this recursion, ``q_{l+1} = fan_in Var(w) E[phi(sqrt(q_l) z)^2]``, with the
expectation over ``z ~ N(0, 1)`` summed on a fine grid (mean-field theory: Poole et al. 2016, Schoenholz et
al. 2017).

Run: python -m experiments.init_signal_propagation  ->  experiments/results/init_signal_propagation/
Result (default config, 2-core CPU, about 2 minutes): the measured activation std is within 3% of the
mean-field prediction at every layer for tanh, 5% for sigmoid, and 0.81x-1.01x for ReLU (one weight draw
drifting; the same draw, scaled, for every ReLU init). N(0, 1) explodes with ReLU (x22.3 per layer =
sqrt(1000 / 2), float32 overflow at layer 28, gradients lost) and saturates tanh (92% of units) and
sigmoid (77%); std 1e-2 vanishes (tanh 9e-16, ReLU 2e-20 at layer 30); He keeps
ReLU's std at 0.83 -> 0.67 while LeCun = Xavier lose 1/sqrt 2 per layer (measured 0.702); LeCun/Xavier do
NOT keep tanh at unit variance: 0.63, 0.23, 0.13 at layers 1, 10, 30 (slow decay), PyTorch's tanh gain 5/3
holds 0.65. Details: experiments/README.md.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, run, write_results
from jaxnets import init, layers

CONFIG = dict(preset="default", seed=0, depth=30, width=1000, batch=256,
              nonlinearities=("tanh", "sigmoid", "relu"),
              inits=("normal_1", "normal_1e-4", "lecun", "xavier", "xavier_gain", "he"),
              report_layers=(1, 10, 30), quadrature_points=40001)
FULL_CONFIG = dict(CONFIG, preset="full", depth=100, width=4096, batch=1024, report_layers=(1, 10, 30, 100))
TINY_CONFIG = dict(CONFIG, preset="tiny", depth=4, width=16, batch=4, nonlinearities=("tanh", "relu"),
                   inits=("normal_1e-4", "lecun", "he"), report_layers=(1, 4), quadrature_points=2001)


def _normal(std: float):
    """N(0, std^2) regardless of the fan: the 'naive' initializations."""
    return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


# name -> (label, factory(nonlinearity) -> initializer)
INITS = {
    "normal_1": ("N(0, 1)", lambda nl: _normal(1.0)),
    "normal_1e-4": ("N(0, 1e-4)", lambda nl: _normal(1e-2)),
    "lecun": ("LeCun", lambda nl: init.lecun_normal()),
    "xavier": ("Xavier", lambda nl: init.xavier_normal()),
    "xavier_gain": ("Xavier, gain(nl)", lambda nl: init.xavier_normal(gain=init.calculate_gain(nl))),
    "he": ("He", lambda nl: init.he_normal()),
}
STYLES = {"normal_1": ("C3", "-"), "normal_1e-4": ("C7", "-"), "lecun": ("C0", "-"), "xavier": ("C9", ":"),
          "xavier_gain": ("C1", "-"), "he": ("C2", "-")}


def _scaled(fn, x: jax.Array) -> jax.Array:
    """``fn(x)`` for a scale-equivariant statistic (std, norm) computed as ``s * fn(x / s)``, ``s = max|x|``.

    The plain formulas square the entries and overflow float32 once they pass 1.8e19; N(0, 1) with ReLU
    gets there by layer ~15, far before the activations themselves overflow (3.4e38).
    """
    s = jnp.max(jnp.abs(x))
    s = jnp.where(s > 0, s, 1.0)
    return s * fn(x / s)


def propagate(weights: jax.Array, x: jax.Array, readout: jax.Array, act, dphi_max: float):
    """One forward and backward pass through ``len(weights)`` layers ``h <- act(h @ w)``.

    Args:
      weights: ``[depth, width, width]``, one ``[in, out]`` kernel per layer.
      x: inputs ``[batch, width]``; readout: ``r`` of the loss, ``[batch, width]``.
      act: the nonlinearity; dphi_max: the maximum of its derivative (saturation is ``phi' < 1%`` of it).
    Returns: per-layer ``[depth]`` arrays: activation std, saturated fraction, and the Frobenius norm of
      ``dL/dW_l``.
    """
    def loss(weights):
        def layer(h, w):
            z = layers.linear(h, w)
            h, dphi = jax.jvp(act, (z,), (jnp.ones_like(z),))  # phi(z) and phi'(z) elementwise
            return h, (_scaled(jnp.std, h), jnp.mean(dphi < 0.01 * dphi_max))
        y, stats = jax.lax.scan(layer, x, weights)
        return jnp.sum(y * readout) / x.shape[0], stats

    grads, (std, saturated) = jax.grad(loss, has_aux=True)(weights)
    return std, saturated, jax.vmap(lambda g: _scaled(jnp.linalg.norm, g))(grads)


def mean_field_std(act, weight_variance: float, width: int, depth: int, points: int) -> np.ndarray:
    """Infinite-width prediction of the activation std per layer for inputs with ``E[x^2] = 1``."""
    # A plain grid, not Gauss-Hermite nodes: phi(sqrt(q) z) has a kink (ReLU) or is a near-step (tanh with
    # q = 1000), which a few hundred Hermite nodes integrate badly; a step of 5e-4 resolves both.
    z = np.linspace(-10.0, 10.0, points)
    w = np.exp(-z ** 2 / 2)
    w /= w.sum()  # sum_i w_i f(z_i) ~ E[f(z)] for z ~ N(0, 1)
    second_moment, stds = 1.0, []
    for _ in range(depth):
        q = width * weight_variance * second_moment  # pre-activation variance
        with jax.enable_x64(True):  # float64: under N(0, 1) the predicted q passes float32's range
            phi = np.asarray(act(jnp.asarray(math.sqrt(q) * z)))
        mean, second_moment = w @ phi, w @ phi ** 2
        stds.append(math.sqrt(max(second_moment - mean ** 2, 0.0)))
    return np.array(stds)


def main(config=CONFIG, *, out=None):
    """Activation std, saturation and weight-gradient norm per layer for every (nonlinearity, init)."""
    started = time.perf_counter()
    depth, width, batch = config["depth"], config["width"], config["batch"]
    key_x, key_r, key_w = jax.random.split(jax.random.key(config["seed"]), 3)
    x = jax.random.normal(key_x, (batch, width))
    readout = jax.random.normal(key_r, (batch, width))
    layer_keys = jax.random.split(key_w, depth)  # the same keys for every init: only the scale differs

    grid = np.linspace(-10.0, 10.0, 20001)
    runs = {}
    for nl in config["nonlinearities"]:
        act = layers.get_activation(nl)
        dphi_max = float(np.max(jax.vmap(jax.grad(act))(jnp.asarray(grid, jnp.float32))))
        step = jax.jit(propagate, static_argnums=(3, 4))
        for name in config["inits"]:
            initializer = INITS[name][1](nl)
            weights = jnp.stack([initializer(k, (width, width)) for k in layer_keys])
            std, saturated, grad_norm = (np.asarray(v, np.float64)
                                         for v in step(weights, x, readout, act, dphi_max))
            weight_variance = float(np.var(np.asarray(weights), dtype=np.float64))
            theory = mean_field_std(act, weight_variance, width, depth, config["quadrature_points"])
            nonfinite = np.flatnonzero(~np.isfinite(std) | ~np.isfinite(grad_norm))
            ok = np.isfinite(std) & (std > 0)
            last_ok = int(np.flatnonzero(ok)[-1]) if ok.any() else 0
            runs[f"{nl}/{name}"] = {
                "weight_variance": weight_variance,
                "act_std": std, "act_std_theory": theory, "saturated_fraction": saturated,
                "weight_grad_norm": grad_norm,
                # Geometric-mean change of the std per layer over the finite layers (1.0 = preserved).
                "act_std_ratio_per_layer": float((std[last_ok] / std[0]) ** (1 / last_ok)) if last_ok else None,
                "first_nonfinite_layer": int(nonfinite[0]) + 1 if nonfinite.size else None,
                "at_layers": {str(l): {"act_std": std[l - 1], "act_std_theory": theory[l - 1],
                                       "saturated_fraction": float(saturated[l - 1]),
                                       "weight_grad_norm": grad_norm[l - 1]}
                              for l in config["report_layers"]},
            }
            print(f"{nl:8s} {name:12s} std@1 {std[0]:9.3g} std@{depth} {std[-1]:9.3g} (theory {theory[-1]:9.3g}) "
                  f"|dL/dW|@1 {grad_norm[0]:9.3g} @{depth} {grad_norm[-1]:9.3g}", flush=True)

    return write_results(__file__, config, {"runs": runs}, figures={"signal_propagation": plot(runs, config)},
                         out=out, started=started)


def plot(runs: dict, config: dict):
    nls = config["nonlinearities"]
    fig, axes = plt.subplots(len(nls), 3, figsize=(15, 3.6 * len(nls)), squeeze=False)
    layer = np.arange(1, config["depth"] + 1)
    for row, nl in zip(axes, nls):
        for name in config["inits"]:
            r, (color, style) = runs[f"{nl}/{name}"], STYLES[name]
            std, grad = np.asarray(r["act_std"]), np.asarray(r["weight_grad_norm"])
            row[0].plot(layer, np.where(std > 0, std, np.nan), color=color, ls=style, lw=2, label=INITS[name][0])
            row[0].plot(layer, r["act_std_theory"], color=color, ls="--", lw=0.8)
            row[1].plot(layer, np.where(grad > 0, grad, np.nan), color=color, ls=style, lw=2)
            row[2].plot(layer, r["saturated_fraction"], color=color, ls=style, lw=2)
        row[0].set(yscale="log", ylabel=f"{nl}\nactivation std", xlabel="layer")
        row[1].set(yscale="log", ylabel="||dL/dW_l||", xlabel="layer")
        row[2].set(ylim=(-0.02, 1.02), ylabel="fraction with phi' < 1% of max", xlabel="layer")
        for ax in row:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="solid: measured, dashed: theory", title_fontsize=8)
    axes[0][0].set_title("activation std per layer")
    axes[0][1].set_title("weight-gradient norm per layer")
    axes[0][2].set_title("saturated units (ReLU: the zero half)")
    return finish_figure(fig, suptitle=f"{config['depth']}-layer MLP, width {config['width']}, batch "
                                       f"{config['batch']} of N(0, 1) inputs, no biases; gaps = float32 overflow "
                                       f"(inf/nan)")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
