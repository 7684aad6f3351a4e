"""Where a jaxnets training step's time goes, fusion by fusion: a profiler trace of the compiled step on CPU.

    python -m benchmarks.profile_step --model resnet18 --steps 2       # writes results/profile_resnet18.json
    python -m benchmarks.profile_step --model lenet5 --batch-size 128 --steps 20 --top 15

XLA's CPU runtime records one trace event per executed thunk (each fusion, convolution, custom call) when
`--xla_cpu_enable_xprof_traceme=true` is in `XLA_FLAGS`; this script re-executes itself with that flag, traces
`--steps` steps of `compile_steps("none")` (after two untimed ones) with `jax.profiler`, reads the trace with
`jax.profiler.ProfileData`, sums each thunk's time over the trace (both of XLA's Eigen worker threads), and
names it by its kind (the thunk name without its `.N` suffix: `transpose_copy_fusion`, `convolution`, ...).
For the top thunks it also prints the output shape and the operands from the compiled HLO, so a fusion can be
read (e.g. a transpose that recomputes a BatchNorm+ReLU chain for a weight gradient). Tracing adds overhead:
compare thunks within one trace, not with the untraced step time.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

from benchmarks.run import HERE, MODELS, machine

FLAG = "--xla_cpu_enable_xprof_traceme=true"
SHAPES = {"lenet5": (28, 28, 1), "resnet18": (32, 32, 3), "vgg11_bn": (32, 32, 3)}
OPTIONS = {"lenet5": {}, "resnet18": {"variant": "cifar"}, "vgg11_bn": {"variant": "cifar"}}


def trace(model: str, batch_size: int, steps: int) -> tuple[dict, str]:
    """Per-thunk milliseconds per step ({name: ms}) and the compiled HLO text (run with the trace flag set)."""
    import jax
    import numpy as np
    from jax.profiler import ProfileData

    from jaxnets import models
    from jaxnets.train import TrainState, compile_steps, optimizer

    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, *SHAPES[model])).astype(np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    net = models.create(model, **OPTIONS[model])
    state = TrainState.create(net, optimizer("sgd", learning_rate=0.01, momentum=0.9), images[:1], seed=0)
    batch = jax.device_put({"image": images, "label": labels})
    compiled = compile_steps("none")
    s = compiled.put_state(state)
    hlo = compiled.lower_train(s, batch).compile().as_text()
    for _ in range(2):
        s, metrics = compiled.train(s, batch)
        metrics["loss"].block_until_ready()
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(steps):
            s, metrics = compiled.train(s, batch)
            metrics["loss"].block_until_ready()
        jax.profiler.stop_trace()
        data = ProfileData.from_file(sorted(glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True))[-1])
        per_thunk: collections.Counter = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                if line.name == "python":
                    continue
                for event in line.events:
                    if not event.name.startswith("ThunkExecutor"):
                        per_thunk[event.name] += event.duration_ns / 1e6 / steps
    return dict(per_thunk), hlo


def describe(hlo: str, name: str) -> str:
    """`shape = kind(operands)` of the instruction `name` in the compiled HLO's entry computation."""
    match = re.search(rf"%{re.escape(name)} = (\S+) \S+?\((.*?)\)(?:, kind=(\w+))?", hlo)
    if not match:
        return ""
    operands = re.sub(r"/\*index=\d+\*/", "", match.group(2))
    return f"{match.group(1)} <- {operands[:160]}"


def summarise(per_thunk: dict, hlo: str, top: int) -> dict:
    kinds: collections.Counter = collections.Counter()
    for name, ms in per_thunk.items():
        kinds[re.sub(r"\.\d+$", "", name)] += ms
    return {"total_ms_per_step": sum(per_thunk.values()),
            "by_kind_ms_per_step": dict(kinds.most_common()),
            "top": [{"thunk": n, "ms_per_step": ms, "hlo": describe(hlo, n)}
                    for n, ms in collections.Counter(per_thunk).most_common(top)]}


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=MODELS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    if FLAG not in os.environ.get("XLA_FLAGS", ""):  # XLA_FLAGS is read once per process: run again with it
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FLAG}".strip()}
        cmd = [sys.executable, "-m", "benchmarks.profile_step", *(sys.argv[1:] if argv is None else argv)]
        subprocess.run(cmd, check=True, env=env, cwd=os.path.dirname(HERE))
        return None
    per_thunk, hlo = trace(args.model, args.batch_size, args.steps)
    result = {"machine": machine(), "loadavg_1m": os.getloadavg()[0], "model": args.model,
              "batch_size": args.batch_size, "steps": args.steps, **summarise(per_thunk, hlo, args.top)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"profile_{args.model}.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.model}, batch {args.batch_size}: {result['total_ms_per_step']:,.0f} ms of traced thunks per step "
          f"(tracing on; load {result['loadavg_1m']:.1f})")
    for kind, ms in list(result["by_kind_ms_per_step"].items())[:12]:
        print(f"  {ms:9.1f} ms  {kind}")
    for row in result["top"]:
        print(f"  {row['ms_per_step']:9.1f} ms  {row['thunk']}: {row['hlo']}")
    return result


if __name__ == "__main__":
    main()
