"""Forward or reverse mode: which computes a full Jacobian of f: R^n -> R^m faster?

Forward mode (``jax.jacfwd`` = ``vmap`` of ``jax.jvp`` over the n input directions) pushes one tangent per
INPUT through the function; reverse mode (``jax.jacrev`` = ``vmap`` of ``jax.vjp`` over the m output
directions) pulls one cotangent per OUTPUT back through it. Each pass costs a small multiple of one
evaluation, so the rule (course notes, "Autodiff by Jacobian multiplication") is: reverse wins when the
output is narrower than the input (m < n: gradients of a scalar loss), forward when it is wider (m > n).
For the map here, ``f(x) = W2 tanh(W1 x + b1) + b2`` with a hidden layer of h units, the multiply-adds are
``h n (n + m)`` for jacfwd and ``h m (n + m)`` for jacrev: a predicted time ratio fwd/rev of n/m once the
work dominates the fixed per-call overhead.

Also the notes' worked example (Examples 6.42 and 6.43): ``f(x, y) = y log x + sqrt(y log x)`` at
``(3, 2)``, differentiated by one forward pass per input (``jax.jvp``) and by one reverse pass
(``jax.vjp``), both against the closed form computed by hand below, in float64.

Run: python -m experiments.autodiff_modes  ->  experiments/results/autodiff_modes/
Result (default config, 2-core CPU, 45 s): wherever the Jacobian costs more than the fixed ~0.1 ms per call
(max(n, m) >= 100) the faster mode is the predicted one, 10 of 10 pairs: jacrev 61x faster at
(n, m) = (1000, 1), jacfwd 97x faster at (1, 1000) (the work model says 1000x; log-log slope 0.50). For
n, m <= 10 both take the same 60-90 us (ratios 0.98-1.10, inside the timing spread), so (1, 10) and (10, 1)
"fail" as ties. Worked example: jvp and vjp both give (df/dx, df/dy) = (0.891541845207370,
1.469188240509988), the closed form, to 2.2e-16 in float64.
"""
from __future__ import annotations

import itertools
import math
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, run, write_results
from jaxnets import init, layers

CONFIG = dict(preset="default", seed=0, sizes=(1, 10, 100, 1000), hidden=256, repeats=9, min_time_s=0.05,
              point=(3.0, 2.0))
FULL_CONFIG = dict(CONFIG, preset="full", sizes=(1, 10, 100, 1000, 10000), hidden=1024, repeats=21)
TINY_CONFIG = dict(CONFIG, preset="tiny", sizes=(1, 8), hidden=4, repeats=2, min_time_s=0.0)


def make_mlp(key: jax.Array, n: int, m: int, hidden: int):
    """A fixed random map R^n -> R^m: ``W2 tanh(W1 x + b1) + b2`` with LeCun-normal weights."""
    k1, k2, k3 = jax.random.split(key, 3)
    w1, w2 = init.lecun_normal()(k1, (n, hidden)), init.lecun_normal()(k2, (hidden, m))
    b1 = 0.1 * jax.random.normal(k3, (hidden,))
    return lambda x: layers.linear(layers.tanh(layers.linear(x, w1, b1)), w2)


def median_time(fn, x, *, repeats: int, min_time_s: float) -> tuple[float, float]:
    """Median seconds per call over ``repeats`` timed batches, after one compiling call, and the spread
    (slowest batch / fastest batch).

    Each batch repeats the call enough times to last ``min_time_s`` (calibrated once), so microsecond
    calls are not measured at the resolution of the clock.
    """
    jax.block_until_ready(fn(x))  # compile
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(fn(x))
        if time.perf_counter() - start >= min_time_s or number >= 1 << 16:
            break
        number *= 2
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(fn(x))
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times), max(times) / min(times)


def worked_example(point: tuple[float, float]) -> dict:
    """Gradient of ``f(x, y) = y log x + sqrt(y log x)`` by forward mode, reverse mode and by hand."""
    def f(x, y):
        b = y * jnp.log(x)
        return b + jnp.sqrt(b)

    x0, y0 = point
    # By hand: with b = y log x, f = b + sqrt(b), df/db = 1 + 1 / (2 sqrt(b)); db/dx = y / x, db/dy = log x.
    dfdb = 1 + 1 / (2 * math.sqrt(y0 * math.log(x0)))
    closed = [dfdb * y0 / x0, dfdb * math.log(x0)]
    with jax.enable_x64(True):
        x, y = jnp.float64(x0), jnp.float64(y0)
        # Forward mode: one jvp per input direction (the notes' Example 6.42 carries both at once).
        forward = [float(jax.jvp(f, (x, y), (jnp.float64(1.0), jnp.float64(0.0)))[1]),
                   float(jax.jvp(f, (x, y), (jnp.float64(0.0), jnp.float64(1.0)))[1])]
        # Reverse mode: one vjp from the scalar output gives both partials (Example 6.43).
        value, pullback = jax.vjp(f, x, y)
        reverse = [float(g) for g in pullback(jnp.float64(1.0))]
    l3 = math.log(3.0)
    return {
        "point": list(point), "f": float(value), "grad_closed_form": closed, "grad_forward_jvp": forward,
        "grad_reverse_vjp": reverse,
        "max_abs_error_forward": max(abs(a - b) for a, b in zip(forward, closed)),
        "max_abs_error_reverse": max(abs(a - b) for a, b in zip(reverse, closed)),
        # The notes print df/dx = (1/3)(2 + 1/(3 sqrt(2 log 3))) in Example 6.42, step 4, but their own
        # step 3 (dc/dx = 1/(3 sqrt(2 log 3))) and Example 6.43 give (1/3)(2 + 1/sqrt(2 log 3)): a typo.
        "notes_6_42_printed_df_dx": (2 + 1 / (3 * math.sqrt(2 * l3))) / 3 if point == (3.0, 2.0) else None,
        "notes_6_43_printed_df_dx": (2 + 1 / math.sqrt(2 * l3)) / 3 if point == (3.0, 2.0) else None,
        "notes_printed_df_dy": 0.5 * math.sqrt(l3 / 2) + l3 if point == (3.0, 2.0) else None,
    }


def main(config=CONFIG, *, out=None):
    """Median wall time of jit(jacfwd) vs jit(jacrev) over a grid of (n, m), plus the worked example."""
    started = time.perf_counter()
    example = worked_example(tuple(config["point"]))
    print("worked example:", {k: example[k] for k in ("grad_closed_form", "grad_forward_jvp", "grad_reverse_vjp")})

    key = jax.random.key(config["seed"])
    grid = []
    for i, (n, m) in enumerate(itertools.product(config["sizes"], repeat=2)):
        key_f, key_x = jax.random.split(jax.random.fold_in(key, i))
        f = make_mlp(key_f, n, m, config["hidden"])
        x = jax.random.normal(key_x, (n,))
        fwd, rev = jax.jit(jax.jacfwd(f)), jax.jit(jax.jacrev(f))
        difference = float(jnp.max(jnp.abs(fwd(x) - rev(x))))  # the same [m, n] Jacobian either way
        t_fwd, spread_fwd = median_time(fwd, x, repeats=config["repeats"], min_time_s=config["min_time_s"])
        t_rev, spread_rev = median_time(rev, x, repeats=config["repeats"], min_time_s=config["min_time_s"])
        grid.append({"n": n, "m": m, "fwd_s": t_fwd, "rev_s": t_rev, "fwd_over_rev": t_fwd / t_rev,
                     "fwd_slowest_over_fastest": spread_fwd, "rev_slowest_over_fastest": spread_rev,
                     "predicted_fwd_over_rev": n / m, "faster": "forward" if t_fwd < t_rev else "reverse",
                     "max_abs_jacobian_difference": difference})
        print(f"n={n:6d} m={m:6d} jacfwd {t_fwd * 1e6:10.1f} us  jacrev {t_rev * 1e6:10.1f} us  "
              f"fwd/rev {t_fwd / t_rev:8.3g} (predicted {n / m:.3g})", flush=True)

    # The rule's verdict: on every n != m, is the faster mode the one the rule predicts?
    unequal = [g for g in grid if g["n"] != g["m"]]
    agrees = [g for g in unequal if g["faster"] == ("reverse" if g["m"] < g["n"] else "forward")]
    large = [g for g in unequal if max(g["n"], g["m"]) >= 100]
    summary = {
        "pairs_with_n_ne_m": len(unequal), "pairs_where_rule_holds": len(agrees),
        "rule_fails_at": [(g["n"], g["m"]) for g in unequal if g not in agrees],
        "pairs_with_max_ge_100": len(large), "rule_holds_with_max_ge_100": sum(g in agrees for g in large),
        "smallest_gap_with_max_ge_100": min((max(g["fwd_over_rev"], 1 / g["fwd_over_rev"]) for g in large),
                                            default=None),
        # Timing noise: the largest slowest/fastest batch ratio of any measurement.
        "largest_spread": max(max(g["fwd_slowest_over_fastest"], g["rev_slowest_over_fastest"]) for g in grid),
        # Slope of log(measured ratio) against log(n/m): 1 if time tracked the work exactly.
        "loglog_slope_measured_vs_predicted": float(np.polyfit(
            np.log([g["predicted_fwd_over_rev"] for g in unequal]),
            np.log([g["fwd_over_rev"] for g in unequal]), 1)[0]) if len(unequal) > 1 else None,
    }
    print(summary)
    return write_results(__file__, config, {"worked_example": example, "jacobian_timings": grid, "summary": summary},
                         figures={"fwd_vs_rev": plot(grid, config)}, out=out, started=started)


def plot(grid: list, config: dict):
    sizes = list(config["sizes"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    ratio = np.array([g["predicted_fwd_over_rev"] for g in grid])
    measured = np.array([g["fwd_over_rev"] for g in grid])
    sc = left.scatter(ratio, measured, c=np.log10([max(g["n"], g["m"]) for g in grid]), cmap="viridis", s=50,
                      zorder=3)
    lims = [min(ratio.min(), measured.min()) / 2, max(ratio.max(), measured.max()) * 2]
    left.plot(lims, lims, "k--", lw=1, label="time ratio = n/m (work model)")
    left.axhline(1, color="gray", lw=1)
    left.axvline(1, color="gray", lw=1)
    left.set(xscale="log", yscale="log", xlabel="n / m (input width / output width)",
             ylabel="time(jacfwd) / time(jacrev)", title="above 1: reverse mode faster")
    left.legend(loc="upper left")
    fig.colorbar(sc, ax=left, label="log10 max(n, m)")
    table = np.full((len(sizes), len(sizes)), np.nan)
    for g in grid:
        table[sizes.index(g["m"]), sizes.index(g["n"])] = math.log10(g["fwd_over_rev"])
    bound = max(np.nanmax(np.abs(table)), 0.1)
    im = right.imshow(table, origin="lower", cmap="RdBu", vmin=-bound, vmax=bound)
    for (r, c), v in np.ndenumerate(table):
        right.text(c, r, f"{10 ** v:.2g}", ha="center", va="center", fontsize=9,
                   color="white" if abs(v) > 0.6 * bound else "black")
    right.set(xticks=range(len(sizes)), xticklabels=sizes, yticks=range(len(sizes)), yticklabels=sizes,
              xlabel="n (inputs)", ylabel="m (outputs)", title="time(jacfwd) / time(jacrev)")
    fig.colorbar(im, ax=right, label="log10 ratio (red: forward faster, blue: reverse)")
    return finish_figure(fig, suptitle=f"Full Jacobian of a random tanh MLP R^n -> R^m (hidden {config['hidden']}), "
                                       f"jit, median of {config['repeats']} timed batches, {jax.devices()[0].platform}")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
