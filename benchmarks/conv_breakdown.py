"""Where ResNet-18's training step goes: its convolutions one by one, jaxnets (XLA CPU) against PyTorch.

    python -m benchmarks.conv_breakdown                     # batch 128, CIFAR stem, 5 repeats
    python -m benchmarks.conv_breakdown --batch-size 32 --repeats 3 --xla-defaults

Every distinct convolution of ResNet-18 with the CIFAR stem (3x3 stride 1, no max-pool) is timed alone, in
its three parts: forward, data gradient (dx) and weight gradient (dw); `count` is how many times it occurs
in the network. jaxnets: `layers.conv` jitted with `train.default_compiler_options()` (`--xla-defaults`:
XLA's defaults, i.e. YNNPACK convolutions); dx and dw are separate programs (`jax.vjp` with one output
used). PyTorch: eager, channels-last (the faster torch layout on these CPUs), forward `F.conv2d` and
`torch.ops.aten.convolution_backward` with `output_mask` selecting dx or dw. Each framework runs in its own
process, one after the other (in one process, XLA's spinning worker threads slowed torch's OpenMP threads
and made torch's sums exceed its whole training step); medians of `--repeats` timed calls after a warm-up. The stem's dx is not needed in
training and is not timed. The sums (weighted by `count`) say how much of each framework's step time the
convolutions take; the rest of the step is BatchNorm, ReLU, the residual adds, pooling, the head and the
optimizer update.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from jaxnets import layers
from jaxnets.train import default_compiler_options

# (name, spatial size of the input, in channels, out channels, kernel, stride, count in ResNet-18 CIFAR)
CONVS = (
    ("stem", 32, 3, 64, 3, 1, 1),
    ("layer1 3x3", 32, 64, 64, 3, 1, 4),
    ("layer2 3x3 s2", 32, 64, 128, 3, 2, 1),
    ("layer2 3x3", 16, 128, 128, 3, 1, 3),
    ("layer2 1x1 s2", 32, 64, 128, 1, 2, 1),
    ("layer3 3x3 s2", 16, 128, 256, 3, 2, 1),
    ("layer3 3x3", 8, 256, 256, 3, 1, 3),
    ("layer3 1x1 s2", 16, 128, 256, 1, 2, 1),
    ("layer4 3x3 s2", 8, 256, 512, 3, 2, 1),
    ("layer4 3x3", 4, 512, 512, 3, 1, 3),
    ("layer4 1x1 s2", 8, 256, 512, 1, 2, 1),
)
PARTS = ("forward", "dx", "dw")


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation for JAX)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _jax_parts(batch, size, cin, cout, k, stride, options):
    x = jax.random.normal(jax.random.key(0), (batch, size, size, cin))
    w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05

    def conv(x, w):
        return layers.conv(x, w, stride=stride, padding=k // 2)

    y = jax.jit(conv)(x, w)
    dy = jnp.ones_like(y)
    forward = jax.jit(conv, compiler_options=options)
    dx = jax.jit(lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0], compiler_options=options)
    dw = jax.jit(lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0], compiler_options=options)
    return {"forward": lambda: forward(x, w).block_until_ready(),
            "dx": lambda: dx(x, w, dy).block_until_ready(),
            "dw": lambda: dw(x, w, dy).block_until_ready()}


def _torch_parts(batch, size, cin, cout, k, stride):
    import torch
    import torch.nn.functional as F

    cl = torch.channels_last
    x = torch.randn(batch, cin, size, size).contiguous(memory_format=cl)
    w = (torch.randn(cout, cin, k, k) * 0.05).contiguous(memory_format=cl)
    pad = k // 2
    with torch.no_grad():
        dy = torch.ones_like(F.conv2d(x, w, stride=stride, padding=pad)).contiguous(memory_format=cl)

    def backward(mask):
        with torch.no_grad():
            torch.ops.aten.convolution_backward(dy, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0],
                                                1, mask)

    def forward():
        with torch.no_grad():
            F.conv2d(x, w, stride=stride, padding=pad)

    return {"forward": forward, "dx": lambda: backward([True, False, False]),
            "dw": lambda: backward([False, True, False])}


def measure(framework: str, batch_size: int, repeats: int, options) -> list[dict]:
    """Median ms of every part of every convolution, for one framework, in this process."""
    rows = []
    for name, size, cin, cout, k, stride, count in CONVS:
        fns = (_jax_parts(batch_size, size, cin, cout, k, stride, options) if framework == "jaxnets"
               else _torch_parts(batch_size, size, cin, cout, k, stride))
        rows.append({"conv": name, "count": count, **{part: _median_ms(fns[part], repeats) for part in PARTS
                                                        if not (name == "stem" and part == "dx")}})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--xla-defaults", action="store_true", help="XLA's default options (YNNPACK convs)")
    parser.add_argument("--out", default=None, help="write the numbers to this JSON file")
    parser.add_argument("--framework", choices=("jaxnets", "torch"), default=None,
                        help="measure one framework here and print JSON (what the two worker processes run)")
    args = parser.parse_args(argv)
    options = None if args.xla_defaults else default_compiler_options()
    if args.framework:
        print(json.dumps(measure(args.framework, args.batch_size, args.repeats, options)))
        return {}

    common = ["--batch-size", str(args.batch_size), "--repeats", str(args.repeats)] + (
        ["--xla-defaults"] if args.xla_defaults else [])
    rows = {}
    for fw in ("jaxnets", "torch"):
        proc = subprocess.run([sys.executable, "-m", "benchmarks.conv_breakdown", "--framework", fw] + common,
                              capture_output=True, text=True, check=True)
        rows[fw] = json.loads(proc.stdout.strip().splitlines()[-1])
    totals = {f"{fw} {part}": sum(r["count"] * r.get(part, 0.0) for r in rows[fw])
              for fw in rows for part in PARTS}
    print(f"batch {args.batch_size}, jaxnets compiler options {options}; ms, medians of {args.repeats}")
    print(f"{'conv':<15} {'count':>5} " + " ".join(f"{fw + ' ' + p:>14}" for p in PARTS for fw in rows))
    for i, (name, *_, count) in enumerate(CONVS):
        print(f"{name:<15} {count:>5} " + " ".join(
            f"{rows[fw][i].get(p, float('nan')):>14.1f}" for p in PARTS for fw in rows))
    for fw in rows:
        parts = ", ".join(f"{p} {totals[f'{fw} {p}']:.0f}" for p in PARTS)
        print(f"{fw}: convolutions {sum(totals[f'{fw} {p}'] for p in PARTS):.0f} ms per step ({parts})")
    result = {"batch_size": args.batch_size, "compiler_options": options, "repeats": args.repeats,
              "rows": rows, "totals_ms": totals, "versions": {"jax": jax.__version__}}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
