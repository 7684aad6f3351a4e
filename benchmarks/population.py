"""Population training throughput: R members in one vmapped step against R sequential runs, jaxnets and torch.

    python -m benchmarks.population --repeats 5                  # LeNet-5 R = 1, 4, 8, 16; ResNet-18 R = 4
    python -m benchmarks.population --repeats 3 --models lenet5 --members 8
    python -m benchmarks.population --layers --repeats 5         # LeNet-5's convolutions alone at R = 8
    python -m benchmarks.population --quick --out /tmp/bench     # smoke run (2 members, 1 repeat)

What a population step is: `jax.jit(jax.vmap(make_train_step()))` over the stacked states and batches of R
members (the population core of `train.fit` does exactly this), compiled with
`train.default_compiler_options()`; `layers.conv` batches through `layers.population`'s rules ("auto").
Variants, per model and R, all in this one process, back to back:
  population:  one population step (R members, batch B each);
  sequential:  the single run's compiled step called R times (what R sequential fits cost per step);
  grouped:     the population step with JAX's own convolution batching (`member_convolutions("grouped")`:
               the grouped convolutions XLA CPU runs poorly), LeNet-5 only;
  torch:       R PyTorch models (`benchmarks/torch_baselines.py`, eager, channels-last, SGD momentum 0.9,
               cross-entropy) trained one after another, one step each.
Each repeat times every variant once (`--steps` calls each, synchronised), in the order above, so the load
of the shared machine hits all of them; reported: the median over repeats of the seconds per population
step and images/s summed over members (R x B / seconds), and ratios within each repeat's medians. The
1-minute load average is recorded with every measurement. LeNet-5 trains on the MNIST sample's digits
(`jaxnets.data.mnist_sample()`, B = 128 per member, each member its own shuffled batch), ResNet-18 (CIFAR
stem) on random uint8 32x32x3 images (B = 32). Learning rate 0.01, momentum 0.9.

`--layers`: each LeNet-5 convolution alone at R = 8, batch 128 per member: forward, data gradient (conv2
only: conv1's input needs none) and weight gradient, as separate jitted programs, by formulation:
"grouped" (JAX's rule), "loop" (one conv per member), "taps" (sum over kernel taps), "auto" (this
library's choice), and "single x R" (one member's conv, timed and multiplied by R). Also
LeNet-5's other layers (ReLU + max-pool, the dense classifier), forward and backward: the population
(`vmap` of one member's gradient) against one member's gradient called R times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.run import machine
from jaxnets import data, models
from jaxnets.layers import conv, linear, max_pool
from jaxnets.layers.population import member_convolutions
from jaxnets.train import TrainState, default_compiler_options, optimizer
from jaxnets.train.steps import make_train_step

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {"lenet5": {"batch": 128, "members": (1, 4, 8, 16), "shape": (28, 28, 1)},
           "resnet18": {"batch": 32, "members": (4,), "shape": (32, 32, 3)}}


def _load() -> float:
    return os.getloadavg()[0]


def _batches(model: str, members: int, batch: int, seed: int = 0) -> dict:
    """`{"image": uint8 [R, B, H, W, C], "label": int32 [R, B]}`: each member its own batch."""
    rng = np.random.default_rng(seed)
    if model == "lenet5":
        mnist = data.mnist_sample()
        idx = np.stack([rng.permutation(len(mnist["label"]))[:batch] for _ in range(members)])
        return {"image": np.asarray(mnist["image"])[idx], "label": np.asarray(mnist["label"])[idx]}
    shape = CONFIGS[model]["shape"]
    return {"image": rng.integers(0, 256, (members, batch, *shape), dtype=np.uint8),
            "label": rng.integers(0, 10, (members, batch)).astype(np.int32)}


def _jax_variants(model_name: str, members: int, batches: dict, options, grouped: bool) -> dict:
    """`{variant: run_one_population_step}` for the JAX variants (compiled here, before timing)."""
    model = models.create(model_name, **({"variant": "cifar"} if model_name == "resnet18" else {}))
    tx = optimizer("sgd", learning_rate=0.01, momentum=0.9)
    step = make_train_step()
    states = [TrainState.create(model, tx, batches["image"][0, :1], seed=s) for s in range(members)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *states)
    batch = jax.device_put(batches)
    one_batch = jax.tree.map(lambda a: a[0], batch)
    single = jax.jit(step, compiler_options=options)
    single.lower(states[0], one_batch).compile()
    holders = {"sequential": states[0]}

    def sequential():
        state = holders["sequential"]
        for _ in range(members):
            state, metrics = single(state, one_batch)
        holders["sequential"] = state
        metrics["loss"].block_until_ready()

    variants = {}
    for name, mode in (("population", "auto"),) + ((("grouped", "grouped"),) if grouped else ()):
        with member_convolutions(mode):  # read at trace time: compile inside the block
            pop = jax.jit(jax.vmap(step), compiler_options=options)
            pop.lower(stacked, batch).compile()
        holders[name] = stacked

        def population(name=name, pop=pop):
            holders[name], metrics = pop(holders[name], batch)
            metrics["loss"].block_until_ready()

        variants[name] = population
    variants["sequential"] = sequential
    return variants


def _torch_variant(model_name: str, members: int, batches: dict):
    import torch

    from benchmarks import torch_baselines as tb
    torch.manual_seed(0)
    runs = []
    for r in range(members):
        net = tb.create(model_name, channels_last=True)
        # the jaxnets step's preprocessing: uint8 -> float32 in [0, 1]
        x = tb.to_input(batches["image"][r].astype(np.float32) / 255.0, channels_last=True)
        runs.append((tb.make_train_step(net), x, torch.from_numpy(batches["label"][r]).long()))

    def sequential_torch():
        for step, x, y in runs:
            step(x, y)

    return sequential_torch


def _time(fn, steps: int) -> float:
    """Median seconds of `steps` synchronised calls."""
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_population(model: str, members: int, *, repeats: int, steps: int, torch_too: bool, options,
                       batch: int | None = None) -> dict:
    batch = batch or CONFIGS[model]["batch"]
    batches = _batches(model, members, batch)
    t = time.perf_counter()
    variants = _jax_variants(model, members, batches, options, grouped=model == "lenet5")
    compile_s = time.perf_counter() - t
    if torch_too:
        variants["torch"] = _torch_variant(model, members, batches)
    for fn in variants.values():  # warm-up (first calls)
        fn()
        fn()
    runs = {name: [] for name in variants}
    loads = []
    for _ in range(repeats):
        for name, fn in variants.items():  # alternated within every repeat
            runs[name].append(_time(fn, steps))
            loads.append(_load())
    med = {name: statistics.median(v) for name, v in runs.items()}
    images = members * batch
    result = {"model": model, "members": members, "batch_per_member": batch, "step_s": runs,
              "median_step_s": med, "images_per_s": {n: images / s for n, s in med.items()},
              "loadavg_1m": loads, "compile_s_all_jax_variants": compile_s,
              "population_over_sequential": med["sequential"] / med["population"]}
    if "torch" in med:
        result["population_over_torch"] = med["torch"] / med["population"]
        result["sequential_over_torch"] = med["torch"] / med["sequential"]
    if "grouped" in med:
        result["population_over_grouped"] = med["grouped"] / med["population"]
    return result


# ----------------------------------------------------------------------------------------------
# LeNet-5's convolutions one by one
# ----------------------------------------------------------------------------------------------
LENET_CONVS = (("conv1 1->6 5x5 pad 2", (28, 28, 1), (5, 5, 1, 6), 2),
               ("conv2 6->16 5x5", (14, 14, 6), (5, 5, 6, 16), 0))


def _conv_parts(x, k, pad, mode, options, members_axis: bool) -> dict:
    """`{part: run_once}` for the forward pass, data gradient and weight gradient of one convolution; with
    `members_axis`, each part is `jax.vmap` of the single member's part (vmap outermost, as in a
    population's training step, so the gradients reach the data- and weight-gradient batching rules)."""
    def forward(x, k):
        return conv(x, k, padding=pad)

    def data_gradient(x, k, g):
        return jax.vjp(lambda x_: forward(x_, k), x)[1](g)[0]

    def weight_gradient(x, k, g):
        return jax.vjp(lambda k_: forward(x, k_), k)[1](g)[0]

    fns = {"forward": forward, "data gradient": data_gradient, "weight gradient": weight_gradient}
    y = jax.eval_shape(jax.vmap(forward) if members_axis else forward, x, k)
    dy = jnp.ones(y.shape, y.dtype)
    with member_convolutions(mode):  # read at trace time: compile inside the block
        parts = {name: jax.jit(jax.vmap(fn) if members_axis else fn, compiler_options=options).lower(
            *((x, k) if name == "forward" else (x, k, dy))).compile() for name, fn in fns.items()}
    return {name: (lambda p=p, a=((x, k) if name == "forward" else (x, k, dy)): p(*a).block_until_ready())
            for name, p in parts.items()}


def measure_layers(members: int, batch: int, *, repeats: int, options) -> dict:
    rows = []
    for name, x_shape, k_shape, pad in LENET_CONVS:
        keys = jax.random.split(jax.random.key(0), 2)
        x = jax.random.normal(keys[0], (members, batch, *x_shape))
        k = jax.random.normal(keys[1], (members, *k_shape)) * 0.1
        variants = {mode: _conv_parts(x, k, pad, mode, options, True) for mode in ("grouped", "loop", "taps", "auto")}
        variants["single x R"] = _conv_parts(x[0], k[0], pad, "auto", options, False)
        for parts in variants.values():
            for fn in parts.values():
                fn()
        times = {v: {p: [] for p in parts} for v, parts in variants.items()}
        loads = []
        for _ in range(repeats):
            for v, parts in variants.items():
                for p, fn in parts.items():
                    times[v][p].append(_time(fn, 3) * (members if v == "single x R" else 1))
            loads.append(_load())
        for v in variants:
            for p in times[v]:
                if name.startswith("conv1") and p == "data gradient":
                    continue  # the first layer's input needs no gradient in training
                rows.append({"conv": name, "variant": v, "part": p, "median_ms": 1e3 * statistics.median(times[v][p]),
                             "ms": [1e3 * t for t in times[v][p]]})
        print(f"[layers] {name} done, load {loads[-1]:.1f}", flush=True)
    rows += _other_layers(members, batch, repeats=repeats, options=options)
    return {"members": members, "batch_per_member": batch, "rows": rows, "loadavg_1m": _load()}


def _relu_pool(x):
    return max_pool(jax.nn.relu(x), 2)


def _dense_stack(x, w):  # LeNet-5's classifier, one packed weight [400, 120 + 84 + 10]
    h = jax.nn.relu(linear(x, w[:, :120]))
    return linear(jax.nn.relu(linear(h, w[:120, 120:204])), w[:84, 204:214])


# (name, function of (x, w) whose sum of squares is differentiated, x shape, w shape); pooling gets w = 1.
LENET_OTHERS = (("relu + max_pool 2 on 28x28x6", lambda x, w: _relu_pool(x * w), (28, 28, 6), (6,)),
                ("relu + max_pool 2 on 10x10x16", lambda x, w: _relu_pool(x * w), (10, 10, 16), (16,)),
                ("dense 400-120-84-10", _dense_stack, (400,), (400, 214)))


def _other_layers(members: int, batch: int, *, repeats: int, options) -> list[dict]:
    """LeNet-5's other layers, forward and backward (gradient of the sum of squares with respect to x and w):
    the population (`vmap` of the member's gradient) against the member's gradient called R times."""
    rows = []
    for name, fn, x_shape, w_shape in LENET_OTHERS:
        keys = jax.random.split(jax.random.key(1), 2)
        x = jax.random.normal(keys[0], (members, batch, *x_shape))
        w = jax.random.normal(keys[1], (members, *w_shape)) * 0.1 + (1.0 if len(w_shape) == 1 else 0.0)
        grad = jax.grad(lambda x, w, fn=fn: jnp.sum(fn(x, w) ** 2), argnums=(0, 1))
        pop = jax.jit(jax.vmap(grad), compiler_options=options)
        one = jax.jit(grad, compiler_options=options)

        def sequential(one=one, x=x, w=w):
            for r in range(members):
                out = one(x[r], w[r])
            jax.block_until_ready(out)

        variants = {"auto": lambda pop=pop, x=x, w=w: jax.block_until_ready(pop(x, w)), "single x R": sequential}
        for f in variants.values():
            f()
        times = {v: [] for v in variants}
        for _ in range(repeats):
            for v, f in variants.items():
                times[v].append(_time(f, 3))
        for v in variants:
            rows.append({"conv": name, "variant": v, "part": "forward + backward",
                         "median_ms": 1e3 * statistics.median(times[v]), "ms": [1e3 * t for t in times[v]]})
        print(f"[layers] {name} done, load {_load():.1f}", flush=True)
    return rows


def _print_layers(result: dict) -> None:
    rows = result["rows"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    print(f"\nLeNet-5 convolutions, R = {result['members']}, batch {result['batch_per_member']} per member, ms (median)")
    print("| conv | part | " + " | ".join(variants) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in variants) + " |")
    for conv_name, part in dict.fromkeys((r["conv"], r["part"]) for r in rows):
        cells = [next((f"{r['median_ms']:,.1f}" for r in rows if (r["conv"], r["part"], r["variant"]) ==
                       (conv_name, part, v)), "") for v in variants]
        print(f"| {conv_name} | {part} | " + " | ".join(cells) + " |")


def _print_population(results: list[dict]) -> None:
    print("\n| model | R | batch/member | population img/s | sequential img/s | torch img/s | grouped img/s "
          "| pop / seq | pop / torch | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        ips = r["images_per_s"]

        def cell(k, ips=ips):
            return f"{ips[k]:,.0f}" if k in ips else ""
        loads = r["loadavg_1m"]
        print(f"| {r['model']} | {r['members']} | {r['batch_per_member']} | {cell('population')} | "
              f"{cell('sequential')} | {cell('torch')} | {cell('grouped')} | {r['population_over_sequential']:.2f} | "
              f"{r.get('population_over_torch', float('nan')):.2f} | {min(loads):.1f}-{max(loads):.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.population", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", default="lenet5,resnet18", help="comma-separated: lenet5, resnet18")
    parser.add_argument("--members", default=None, help="comma-separated R values (default: per model, see above)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed calls per variant per repeat (median)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--layers", action="store_true", help="LeNet-5's convolutions alone at R = 8 instead")
    parser.add_argument("--quick", action="store_true", help="smoke run: R = 2, batch 8, 1 repeat, 1 step")
    parser.add_argument("--tag", default="", help="suffix of the result file")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    options = default_compiler_options()
    os.makedirs(args.out, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    meta = {"machine": machine(), "argv": sys.argv[1:] if argv is None else list(argv),
            "compiler_options": options, "versions": {"jax": jax.__version__}}
    if args.quick:
        args.repeats, args.steps = 1, 1
    if args.layers:
        result = measure_layers(2 if args.quick else 8, 8 if args.quick else 128, repeats=args.repeats,
                                options=options)
        with open(os.path.join(args.out, f"population_layers{suffix}.json"), "w") as f:
            json.dump({**meta, **result}, f, indent=1)
        _print_layers(result)
        return 0
    results = []
    for model in args.models.split(","):
        members = ((2,) if args.quick else CONFIGS[model]["members"]) if args.members is None else tuple(
            int(m) for m in args.members.split(","))
        for r in members:
            res = measure_population(model, r, repeats=args.repeats, steps=args.steps, torch_too=not args.no_torch,
                                     options=options, batch=8 if args.quick else None)
            results.append(res)
            print(f"[{model} R={r}] " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in res["images_per_s"].items())
                  + f"; population / sequential {res['population_over_sequential']:.2f}, load "
                  f"{res['loadavg_1m'][-1]:.1f}", flush=True)
    with open(os.path.join(args.out, f"population{suffix}.json"), "w") as f:
        json.dump({**meta, "results": results}, f, indent=1)
    _print_population(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
