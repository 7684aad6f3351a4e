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

And the notes' Concept 6.38: for ``g = f_L o ... o f_1`` with ``f_l: R^{n_{l-1}} -> R^{n_l}``, ``Dg = Df_L ...
Df_1``; forward mode multiplies this chain from the input end, reverse mode from the output end, and "reverse
mode is optimal (can be proved using DP) when n_L <= n_{L-1} <= ... <= n_0 [...] So reverse-mode is often close
to the most efficient mode of autodiff in deep learning". Tested (1) by counting the multiply-adds of the chain
of dense Jacobians (``chain_costs``) in the reverse, the forward and the optimal order (the matrix-chain
dynamic programme), exactly, in integers, over 10,000 random width sequences of each of six kinds (L = 3-8
Jacobians, widths log-uniform in [1, 4096]): decreasing (the notes' condition), increasing, decreasing with one
hidden layer 2-8x wider than its input, any order with the output narrowest, a hidden bottleneck (the
narrowest layer inside), any order; and on the layer widths of five real networks (flattened activations);
(2) by timing the full Jacobian of two tanh MLPs, decreasing 1000-500-100-10 (its DP order is the reverse one)
and a bottleneck 500-500-10-500-500, by jacfwd, jacrev and the mixed order (jacrev through the layers up to the
narrowest hidden layer, jacfwd after it, then one matrix product: the DP's split for the bottleneck), in 15
rounds that alternate the three programs, with XLA's FLOP count of each. Verdicts: "optimal" is reproduced when
the reverse order costs the optimum on every decreasing sequence; "close" when it stays within
``close_factor`` = 2x of the optimum on every sequence of the two kinds whose widths tend to decrease (output
narrowest; decreasing with one layer expanded) and on the classifiers' widths (partly when only the medians
do); the timing when jacrev beats jacfwd in every round by more than either's slowest/fastest spread.
Protocol: exact counts (the random draws fixed by the config's seed) and timings of a deterministic
computation judged on their spread over alternated rounds; the seed rule of experiments/_protocol.py does not
apply. The per-sequence ratios of the left panel of chain_order.png are not stored (120,000 numbers):
``chain_study(CONFIG["chain"], CONFIG["seed"])`` recomputes them exactly.

Run: python -m experiments.autodiff_modes  ->  experiments/results/autodiff_modes/
Result (default config, 2026-12-07, 45.9 s wall on the 2-core CPU at load 2.5-2.7 after a rerun on a
quieter machine; the first run of this version, at load 18-20, took 188 s and had spreads up to 328x). (n, m)
grid: with max(n, m) >= 100 the faster mode is the predicted one on 10 of 10 pairs (jacrev 53.5x faster at
(1000, 1), jacfwd 85.6x faster at (1, 1000); log-log slope 0.57), and 9 of the 10 gaps exceed that pair's
slowest/fastest batch spread; the tenth, (10, 100), is 1.75x against a spread of 1.79x: "partly" by the
rule, which needs all. With n, m <= 10 the ratios (forward 1.51x faster at (1, 10), spread 1.55x; reverse
1.16x faster at (10, 1), spread 4.5x) are ties. Worked example: jvp and vjp both give
(df/dx, df/dy) = (0.89154184520737, 1.4691882405099876), the closed form, to 2.2e-16 and 0 in float64.
Concept 6.38, exact counts: the reverse order costs the optimum on 10,000 of 10,000 decreasing sequences (and
the forward order on 10,000 of 10,000 increasing ones): reproduced. Where the widths tend to decrease it
stays close: output narrowest, optimal on 8,823 of 10,000 and never above 1.955x the optimum (99th percentile
1.196x); decreasing with one layer 2-8x wider than its input, optimal on 9,642 and at most 1.333x; on the
widths of MLP 1000-500-100-10, MLP 784-1024-1024-10, LeNet-5 and ResNet-20 (CIFAR-10) exactly optimal, even
where a layer expands (784 -> 4704, 3072 -> 16384): reproduced (close = within 2x). Where reverse loses:
increasing widths (median 43.9x the optimum, up to 2,574x; the forward order is optimal there), a hidden
bottleneck (optimal on 965 of 10,000; median 8.44x, 99th percentile 1,127x, up to 4,034x), any order (optimal
on 1,954; median 6.33x, up to 4,035x), the autoencoder 784-256-32-256-784 (5.23x: its optimum multiplies
each half towards the 32-wide code, ((D4 D3) (D2 D1))). Timings (15 alternated rounds, medians): MLP
1000-500-100-10, jacfwd 6.11 ms, jacrev 0.21 ms, fwd/rev 29.1x per round (24.4x in the slowest round; work
model 100x, XLA FLOPs 91.2x), above the largest slowest/fastest spread (1.47x): reproduced. Bottleneck MLP
500-500-10-500-500: jacfwd 3.31 ms, jacrev 3.10 ms, the mixed order 0.42 ms (jacrev/mixed 7.6x per round,
6.6x in the slowest; work model 33.6x, XLA FLOPs 32.5x).
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

from experiments._common import finish_figure, machine_load, run, write_results
from jaxnets import init, layers

CONFIG = dict(
    preset="default", seed=0, sizes=(1, 10, 100, 1000), hidden=256, repeats=9, min_time_s=0.05, point=(3.0, 2.0),
    # Concept 6.38: the FLOPs of the Jacobian chain D f_L ... D f_1 in reverse, forward and the optimal order,
    # over random width sequences (n_0, ..., n_L) of each kind, widths log-uniform in [1, max_width], L
    # Jacobians with L drawn from `lengths` (inclusive); the draws are fixed by `seed`.
    chain=dict(n_sequences=10000, lengths=(3, 8), max_width=4096,
               kinds=("decreasing", "increasing", "decreasing_one_layer_expanded", "output_narrowest",
                      "bottleneck", "any_order"),
               expand_factor=(2.0, 8.0),  # "one layer expanded": a hidden width multiplied by a factor in this range
               # "close to the most efficient": reverse mode within this factor of the optimal multiply-adds
               close_factor=2.0),
    # widths of real networks' layer maps (flattened activations), the chain the notes' model applies to
    architectures={"mlp_1000_500_100_10": (1000, 500, 100, 10), "mlp_784_1024_1024_10": (784, 1024, 1024, 10),
                   # LeNet-5 on 28 x 28: conv 6@28x28, pool 6@14x14, conv 16@10x10, pool 16@5x5, 120, 84, 10
                   "lenet5": (784, 4704, 1176, 1600, 400, 120, 84, 10),
                   # ResNet-20 on CIFAR-10: stem + 3 stages of 6 convs (16@32x32, 32@16x16, 64@8x8), pool, dense
                   "resnet20_cifar": (3072,) + (16384,) * 7 + (8192,) * 6 + (4096,) * 6 + (64, 10),
                   "autoencoder_784_256_32_256_784": (784, 256, 32, 256, 784)},
    # full Jacobians of tanh MLPs with these widths, timed in rounds that alternate the modes
    timed_mlps={"decreasing": (1000, 500, 100, 10), "bottleneck": (500, 500, 10, 500, 500)},
    chain_repeats=15,
)
FULL_CONFIG = dict(CONFIG, preset="full", sizes=(1, 10, 100, 1000, 10000), hidden=1024, repeats=21,
                   chain=dict(CONFIG["chain"], n_sequences=100000), chain_repeats=31)
TINY_CONFIG = dict(CONFIG, preset="tiny", sizes=(1, 8), hidden=4, repeats=2, min_time_s=0.0,
                   chain=dict(CONFIG["chain"], n_sequences=30), chain_repeats=2,
                   timed_mlps={"decreasing": (12, 8, 4, 2)})


def make_mlp(key: jax.Array, n: int, m: int, hidden: int):
    """A fixed random map R^n -> R^m: ``W2 tanh(W1 x + b1) + b2`` with LeCun-normal weights."""
    k1, k2, k3 = jax.random.split(key, 3)
    w1, w2 = init.lecun_normal()(k1, (n, hidden)), init.lecun_normal()(k2, (hidden, m))
    b1 = 0.1 * jax.random.normal(k3, (hidden,))
    return lambda x: layers.linear(layers.tanh(layers.linear(x, w1, b1)), w2)


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


def chain_costs(widths) -> dict:
    """Multiply-adds of the Jacobian chain ``D f_L ... D f_1`` (``D f_l`` is [n_l, n_{l-1}], dense) in three orders.

    ``widths`` = (n_0, ..., n_L), input first. An [a, b] @ [b, c] product costs a b c multiply-adds.
    Forward mode, ``D f_L (... (D f_2 D f_1))``: sum over l = 2..L of n_l n_{l-1} n_0. Reverse mode,
    ``((D f_L D f_{L-1}) ...) D f_1``: sum over l = 1..L-1 of n_L n_l n_{l-1}. Optimal: the matrix-chain
    dynamic programme: ``cost[i, j]`` (the product D f_j ... D f_i, shape [n_j, n_{i-1}]) is the minimum over
    i <= k < j of ``cost[i, k] + cost[k + 1, j] + n_j n_k n_{i-1}``. Integers throughout: exact.
    Returns: ``{"forward", "reverse", "optimal", "optimal_order"}`` (the order written with D1 ... DL).
    """
    n = [int(v) for v in widths]
    L = len(n) - 1
    if L < 1 or min(n) < 1:
        raise ValueError(f"chain_costs: expected at least two positive widths (n_0, ..., n_L), got {widths}.")
    forward = sum(n[l] * n[l - 1] * n[0] for l in range(2, L + 1))
    reverse = sum(n[L] * n[l] * n[l - 1] for l in range(1, L))
    cost = {(i, i): 0 for i in range(1, L + 1)}
    split = {}
    for length in range(2, L + 1):
        for i in range(1, L - length + 2):
            j = i + length - 1
            cost[i, j], split[i, j] = min((cost[i, k] + cost[k + 1, j] + n[j] * n[k] * n[i - 1], k)
                                          for k in range(i, j))

    def order(i, j):
        if i == j:
            return f"D{i}"
        k = split[i, j]
        return f"({order(k + 1, j)} {order(i, k)})"

    return {"forward": forward, "reverse": reverse, "optimal": cost[1, L], "optimal_order": order(1, L)}


def draw_widths(rng: np.random.Generator, kind: str, chain: dict) -> list[int]:
    """One random width sequence (n_0, ..., n_L) of the given kind; widths log-uniform in [1, max_width]."""
    lo, hi = chain["lengths"]
    L = int(rng.integers(lo, hi + 1))
    w = [max(1, int(round(v))) for v in np.exp(rng.uniform(0.0, math.log(chain["max_width"]), L + 1))]
    if kind == "decreasing":  # n_L <= ... <= n_0: the notes' condition
        return sorted(w, reverse=True)
    if kind == "increasing":  # the mirror image: forward mode's case
        return sorted(w)
    if kind == "decreasing_one_layer_expanded":  # decreasing, but one hidden layer wider than its input
        w = sorted(w, reverse=True)
        l = int(rng.integers(1, L))
        w[l] = int(round(w[l - 1] * rng.uniform(*chain["expand_factor"])))
        return w
    if kind == "output_narrowest":  # any order, except that the output is the narrowest layer
        i = int(np.argmin(w))
        w[i], w[-1] = w[-1], w[i]
        return w
    if kind == "bottleneck":  # the narrowest layer is a hidden one; both ends are wider
        i, l = int(np.argmin(w)), int(rng.integers(1, L))
        w[i], w[l] = w[l], w[i]
        return w
    if kind == "any_order":
        return w
    raise ValueError(f"draw_widths: unknown kind {kind!r}; expected one of {CONFIG['chain']['kinds']}.")


def chain_study(chain: dict, seed: int) -> dict:
    """Reverse, forward and optimal chain costs over ``n_sequences`` random sequences of each kind."""
    rng = np.random.default_rng(seed)
    out = {}
    for kind in chain["kinds"]:
        rows = []
        for _ in range(chain["n_sequences"]):
            w = draw_widths(rng, kind, chain)
            rows.append(dict(chain_costs(w), widths=w))
        rev = np.array([r["reverse"] / r["optimal"] for r in rows])
        fwd = np.array([r["forward"] / r["optimal"] for r in rows])
        worst = max(rows, key=lambda r: r["reverse"] / r["optimal"])
        quantiles = {"median": 0.5, "p90": 0.9, "p99": 0.99}
        out[kind] = {
            "n": len(rows), "reverse_optimal": int(sum(r["reverse"] == r["optimal"] for r in rows)),
            "forward_optimal": int(sum(r["forward"] == r["optimal"] for r in rows)),
            "reverse_over_optimal": {**{k: float(np.quantile(rev, q)) for k, q in quantiles.items()},
                                     "max": float(rev.max())},
            "forward_over_optimal": {**{k: float(np.quantile(fwd, q)) for k, q in quantiles.items()},
                                     "max": float(fwd.max())},
            "reverse_within_close_factor": int((rev <= chain["close_factor"]).sum()),
            "worst_for_reverse": worst,
            "ratios_reverse": rev.tolist(), "ratios_forward": fwd.tolist()}
    return out


def make_chain_mlp(key: jax.Array, widths):
    """A tanh MLP with the given widths (n_0, ..., n_L), LeCun-normal weights, a linear last layer.

    Returns ``(f, head, tail)``: the whole map and its two halves split at the narrowest hidden layer k
    (``f = tail o head``, ``head``: R^{n_0} -> R^{n_k}, ``tail``: R^{n_k} -> R^{n_L}), and k.
    """
    params = []
    for l, k in enumerate(jax.random.split(key, len(widths) - 1), 1):
        kw, kb = jax.random.split(k)
        params.append((init.lecun_normal()(kw, (widths[l - 1], widths[l])), 0.1 * jax.random.normal(kb, (widths[l],))))
    last = len(params)

    def apply(x, first, stop):  # layers first..stop-1 (1-based), tanh after every layer but the last
        for l in range(first, stop):
            x = layers.linear(x, *params[l - 1])
            x = layers.tanh(x) if l < last else x
        return x

    k = min(range(1, last), key=lambda l: widths[l]) if last > 1 else last
    return (lambda x: apply(x, 1, last + 1)), (lambda x: apply(x, 1, k + 1)), (lambda x: apply(x, k + 1, last + 1)), k


def autodiff_work(widths, k: int) -> dict:
    """Multiply-adds of the full Jacobian by autodiff: one pass costs W = sum_l n_l n_{l-1}; jacfwd runs n_0
    passes, jacrev n_L; the mixed order runs n_k reverse passes through the head, n_k forward passes through
    the tail and multiplies the two Jacobians, [n_L, n_k] @ [n_k, n_0]."""
    w = [widths[l] * widths[l - 1] for l in range(1, len(widths))]
    return {"forward": widths[0] * sum(w), "reverse": widths[-1] * sum(w),
            "mixed": widths[k] * sum(w) + widths[-1] * widths[k] * widths[0]}


def timed_rounds(fns: dict, x, *, repeats: int, min_time_s: float) -> dict:
    """Seconds per call of each of ``fns`` in ``repeats`` rounds; each round times every function once (one
    batch lasting ``min_time_s``, calibrated per function), rotating which goes first, so a slow phase of a
    shared machine hits all of them."""
    numbers = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn(x))  # compiled already; one warm call
        number = 1
        while True:
            start = time.perf_counter()
            for _ in range(number):
                jax.block_until_ready(fn(x))
            if time.perf_counter() - start >= min_time_s or number >= 1 << 16:
                break
            number *= 2
        numbers[name] = number
    names, times = list(fns), {name: [] for name in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(numbers[name]):
                jax.block_until_ready(fns[name](x))
            times[name].append((time.perf_counter() - start) / numbers[name])
    return times


def time_chain_mlps(config: dict) -> dict:
    """Full Jacobians of the ``timed_mlps`` by jacfwd, jacrev and the mixed order (reverse through the layers up
    to the narrowest hidden layer, forward after it); XLA's FLOP count of each program and its timings."""
    key = jax.random.fold_in(jax.random.key(config["seed"]), 1_000_003)
    out = {}
    for i, (name, widths) in enumerate(config["timed_mlps"].items()):
        key_f, key_x = jax.random.split(jax.random.fold_in(key, i))
        f, head, tail, k = make_chain_mlp(key_f, widths)
        x = jax.random.normal(key_x, (widths[0],))
        programs = {"jacfwd": jax.jacfwd(f), "jacrev": jax.jacrev(f),
                    "mixed": lambda x, head=head, tail=tail: jax.jacfwd(tail)(head(x)) @ jax.jacrev(head)(x)}
        compiled = {mode: jax.jit(fn).lower(x).compile() for mode, fn in programs.items()}
        jacobians = {mode: fn(x) for mode, fn in compiled.items()}
        flops = {}
        for mode, fn in compiled.items():
            analysis = fn.cost_analysis()
            analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
            flops[mode] = float(analysis.get("flops", float("nan")))
        times = timed_rounds(compiled, x, repeats=config["chain_repeats"], min_time_s=config["min_time_s"])
        median = {mode: statistics.median(t) for mode, t in times.items()}
        per_round = {f"{a}_over_{b}": [ta / tb for ta, tb in zip(times[a], times[b])]
                     for a, b in (("jacfwd", "jacrev"), ("jacrev", "mixed"), ("jacfwd", "mixed"))}
        out[name] = {
            "widths": list(widths), "split_layer": k, "work_model_multiply_adds": autodiff_work(widths, k),
            "chain_model": chain_costs(widths), "xla_flops": flops, "seconds": times, "median_s": median,
            "slowest_over_fastest": {mode: max(t) / min(t) for mode, t in times.items()},
            "per_round_ratio": {r: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                for r, v in per_round.items()},
            "max_abs_difference_to_jacrev": {mode: float(jnp.max(jnp.abs(j - jacobians["jacrev"])))
                                             for mode, j in jacobians.items()}}
        m = median
        print(f"{name} {widths}: jacfwd {m['jacfwd'] * 1e3:.2f} ms  jacrev {m['jacrev'] * 1e3:.2f} ms  "
              f"mixed (split at n_{k} = {widths[k]}) {m['mixed'] * 1e3:.2f} ms; XLA FLOPs {flops}", flush=True)
    return out


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
        times = timed_rounds({"fwd": fwd, "rev": rev}, x, repeats=config["repeats"], min_time_s=config["min_time_s"])
        t_fwd, t_rev = statistics.median(times["fwd"]), statistics.median(times["rev"])
        spread_fwd, spread_rev = (max(times[k]) / min(times[k]) for k in ("fwd", "rev"))
        grid.append({"n": n, "m": m, "fwd_s": t_fwd, "rev_s": t_rev, "fwd_over_rev": t_fwd / t_rev,
                     "fwd_slowest_over_fastest": spread_fwd, "rev_slowest_over_fastest": spread_rev,
                     "predicted_fwd_over_rev": n / m, "faster": "forward" if t_fwd < t_rev else "reverse",
                     "fwd_over_rev_per_round": [a / b for a, b in zip(times["fwd"], times["rev"])],
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

    load_before = machine_load()
    chains = chain_study(config["chain"], config["seed"])
    for kind, c in chains.items():
        q = c["reverse_over_optimal"]
        print(f"{kind:32s} reverse optimal {c['reverse_optimal']:6d}/{c['n']}  reverse/optimal median {q['median']:.3g}"
              f" p99 {q['p99']:.3g} max {q['max']:.4g}  forward optimal {c['forward_optimal']}/{c['n']}", flush=True)
    architectures = {name: chain_costs(w) | {"widths": list(w)} for name, w in config["architectures"].items()}
    timed = time_chain_mlps(config)
    claims = judge_chain(chains, architectures, timed, config)
    for c in claims:
        print(f"{c['verdict']:15s} {c['claim']}")
    chain_results = {"chain_kinds": {k: {key: v for key, v in c.items() if not key.startswith("ratios_")}
                                     for k, c in chains.items()},
                     "architectures": architectures, "timed_mlps": timed, "claims": claims,
                     "machine_load_before": load_before, "machine_load_after": machine_load(),
                     "protocol": "counts of exact integer multiply-adds (no seed: the draws are fixed by the config's "
                                 "seed) and timings of a deterministic computation judged on their spread over "
                                 "alternated rounds; the seed rule (5 paired seeds) does not apply"}
    return write_results(__file__, config, {"worked_example": example, "jacobian_timings": grid, "summary": summary,
                                            "jacobian_chain": chain_results},
                         figures={"fwd_vs_rev": plot(grid, config),
                                  "chain_order": plot_chain(chains, architectures, timed, config)},
                         out=out, started=started)


def judge_chain(chains: dict, architectures: dict, timed: dict, config: dict) -> list[dict]:
    """Concept 6.38's claims, judged by their own evidence (exact counts; timings against their spread)."""
    why_counts = "exact integer multiply-add counts of the Jacobian chain (a deterministic computation; no seed rule)"
    dec = chains.get("decreasing")
    monotone = {"decreasing_sequences": dec["n"] if dec else 0,
                "reverse_optimal": dec["reverse_optimal"] if dec else 0,
                "mirror_increasing_forward_optimal": chains["increasing"]["forward_optimal"]
                if "increasing" in chains else None,
                "monotone_architectures_reverse_optimal": {
                    name: a["reverse"] == a["optimal"] for name, a in architectures.items()
                    if list(a["widths"]) == sorted(a["widths"], reverse=True)}}
    claims = [{"claim": "reverse mode is optimal when n_L <= n_{L-1} <= ... <= n_0 (Concept 6.38)",
               "kind": "measurement", "evidence": monotone, "why_no_seed_rule": why_counts,
               "verdict": ("not tested" if not dec else "reproduced" if dec["reverse_optimal"] == dec["n"]
                           and all(monotone["monotone_architectures_reverse_optimal"].values())
                           else "not reproduced")}]
    # "close to the most efficient": reverse within close_factor of the optimum where the widths tend to decrease
    close = config["chain"]["close_factor"]
    tend = [k for k in ("output_narrowest", "decreasing_one_layer_expanded") if k in chains]
    classifiers = {name: a["reverse"] / a["optimal"] for name, a in architectures.items() if a["widths"][-1] ==
                   min(a["widths"])}
    worst = [chains[k]["reverse_over_optimal"]["max"] for k in tend] + list(classifiers.values())
    medians = [chains[k]["reverse_over_optimal"]["median"] for k in tend] + list(classifiers.values())
    claims.append({
        "claim": f"reverse mode is close to the most efficient order (within {close:g}x of the optimal multiply-adds) "
                 "where the widths tend to decrease (the output is the narrowest layer; or decreasing with one "
                 "layer expanded; or a classifier's layer widths)",
        "kind": "measurement", "close_factor": close, "why_no_seed_rule": why_counts,
        "evidence": {**{k: {"n": chains[k]["n"], "reverse_optimal": chains[k]["reverse_optimal"],
                            "within_close_factor": chains[k]["reverse_within_close_factor"],
                            "reverse_over_optimal": chains[k]["reverse_over_optimal"]} for k in tend},
                     "classifier_architectures_reverse_over_optimal": classifiers},
        "verdict": ("not tested" if not worst else "reproduced" if max(worst) <= close
                    else "partly" if max(medians) <= close else "not reproduced")})
    if "decreasing" in timed:
        t = timed["decreasing"]
        ratio = t["per_round_ratio"]["jacfwd_over_jacrev"]
        spread = max(t["slowest_over_fastest"]["jacfwd"], t["slowest_over_fastest"]["jacrev"])
        claims.append({
            "claim": f"on the decreasing MLP {'-'.join(map(str, t['widths']))} reverse mode (jacrev) computes the "
                     "full Jacobian faster than forward mode (jacfwd)",
            "kind": "measurement",
            "why_no_seed_rule": "timings of a deterministic computation, judged on their spread over alternated rounds",
            "evidence": {"median_jacfwd_over_jacrev": ratio["median"], "smallest_round_ratio": ratio["min"],
                         "largest_slowest_over_fastest": spread,
                         "work_model_ratio": t["work_model_multiply_adds"]["forward"] /
                         t["work_model_multiply_adds"]["reverse"],
                         "xla_flops_ratio": t["xla_flops"]["jacfwd"] / t["xla_flops"]["jacrev"]},
            "verdict": ("reproduced" if ratio["min"] > 1 and ratio["median"] > spread
                        else "partly" if ratio["median"] > 1 else "not reproduced")})
    return claims


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
                                       f"jit, median of {config['repeats']} alternated rounds, {jax.devices()[0].platform}")


def plot_chain(chains: dict, architectures: dict, timed: dict, config: dict):
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 5))
    for i, (kind, c) in enumerate(chains.items()):
        ratios = np.sort(c["ratios_reverse"])
        left.step(ratios, np.arange(1, len(ratios) + 1) / len(ratios), where="post", color=f"C{i}",
                  label=f"{kind.replace('_', ' ')} ({100 * c['reverse_optimal'] / c['n']:.0f}% optimal)")
    left.axvline(config["chain"]["close_factor"], color="gray", ls="--", lw=1, label="close factor")
    left.set(xscale="log", xlabel="reverse-order multiply-adds / optimal (DP)", ylabel="fraction of sequences",
             title=f"{config['chain']['n_sequences']} random width sequences per kind", ylim=(0, 1.02))
    left.legend(fontsize=7, loc="lower right")
    names = list(architectures)
    y = np.arange(len(names))
    for j, (mode, marker) in enumerate((("reverse", "o"), ("forward", "s"))):
        middle.scatter([architectures[n][mode] / architectures[n]["optimal"] for n in names], y + 0.15 * (j - 0.5),
                       marker=marker, color=f"C{j}", label=f"{mode} order", zorder=3)
    middle.set(xscale="log", yticks=y, yticklabels=[n.replace("_", " ") for n in names],
               xlabel="multiply-adds / optimal order", title="layer widths of real networks")
    middle.legend(fontsize=8)
    modes = ("jacfwd", "jacrev", "mixed")
    for j, (name, t) in enumerate(timed.items()):
        medians = [1e3 * t["median_s"][m] for m in modes]
        lo = [1e3 * (t["median_s"][m] - min(t["seconds"][m])) for m in modes]
        hi = [1e3 * (max(t["seconds"][m]) - t["median_s"][m]) for m in modes]
        right.errorbar(np.arange(3) + 0.1 * (j - 0.5), medians, yerr=[lo, hi], fmt="o", capsize=4, color=f"C{j}",
                       label=f"{name} {'-'.join(map(str, t['widths']))}")
    right.set(yscale="log", xticks=range(3), xticklabels=["jacfwd", "jacrev", "mixed (split at\nnarrowest hidden)"],
              ylabel="ms per full Jacobian (median, min-max bars)",
              title=f"timed, {config['chain_repeats']} alternated rounds")
    slowest = max(max(t["seconds"][m]) for t in timed.values() for m in modes)
    right.set_ylim(top=1e3 * slowest * 20)  # room for the legend above the bars
    right.legend(fontsize=8, loc="upper right")
    return finish_figure(fig, (left, middle, right), grid={"which": "both"},
                         suptitle="Concept 6.38: order of the Jacobian chain product (dense layer Jacobians)")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
