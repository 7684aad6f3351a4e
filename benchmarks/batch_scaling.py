"""Training throughput against batch size, jaxnets and PyTorch eager (channels-last), one fresh process each.

    python -m benchmarks.batch_scaling                          # LeNet-5, batch 32 .. 1024, 2 processes each
    python -m benchmarks.batch_scaling --model resnet18 --batch-sizes 16,32,64,128 --repeats 1
    python -m benchmarks.batch_scaling --quick --out /tmp/b     # smoke run (tests/test_benchmarks.py)

For every batch size the frameworks alternate (each repeat visits them in a rotated order, as `benchmarks.run`),
so drift of a shared machine hits both. Writes `results/batch_scaling_<model>.json` (every process's result, the
load average with each) and `results/batch_scaling_<model>.png`: images/s against batch size (log-log), the
median over processes with the min-max range, and the ratio jaxnets / torch on a second axis. The step's
fixed cost (dispatch, per-op overheads) shows as the slope at small batches; what is left at large batches is
arithmetic and memory traffic.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

from benchmarks.run import HERE, MODELS, machine, run_worker, worker_config, worker_env

FRAMEWORKS = ("jaxnets", "torch_cl")


def measure(model: str, batch_sizes, *, repeats: int, min_time: float, min_steps: int, max_steps: int,
            warmup: int, timeout: float, frameworks=FRAMEWORKS, log=print) -> list[dict]:
    """One worker process per (batch size, repeat, framework); frameworks rotated per repeat."""
    runs = []
    for batch_size in batch_sizes:
        for repeat in range(repeats):
            order = frameworks[repeat % len(frameworks):] + frameworks[:repeat % len(frameworks)]
            for fw in order:
                cfg = worker_config("train", fw, model, device="cpu", precision="float32", batch_size=batch_size,
                                    warmup=warmup, min_steps=min_steps, min_time=min_time, max_steps=max_steps,
                                    repeat=repeat)
                result = run_worker(cfg, timeout=timeout, env=worker_env(fw, device="cpu"))
                result.setdefault("config", cfg)
                runs.append(result)
                ips = result.get("images_per_s")
                what = (f"{ips:,.0f} images/s (load {result.get('loadavg_1m')})" if ips
                        else result.get("error", "")[-200:])
                log(f"{model} batch {batch_size} {fw} repeat {repeat}: {what}")
    return runs


def curves(runs: list[dict], frameworks=FRAMEWORKS) -> dict:
    """{framework: {batch size: {"median", "min", "max", "n"}}} of images/s, and "ratio": jaxnets / torch_cl."""
    out: dict = {fw: {} for fw in frameworks}
    for fw in frameworks:
        sizes = sorted({r["config"]["batch_size"] for r in runs if r["config"]["framework"] == fw})
        for b in sizes:
            v = [r["images_per_s"] for r in runs if r["config"]["framework"] == fw and r["config"]["batch_size"] == b
                 and "images_per_s" in r]
            if v:
                out[fw][b] = {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
    out["ratio"] = {b: out["jaxnets"][b]["median"] / out["torch_cl"][b]["median"]
                    for b in out.get("jaxnets", {}) if b in out.get("torch_cl", {})}
    return out


def plot(model: str, summary: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for fw, label in (("jaxnets", "jaxnets"), ("torch_cl", "PyTorch eager, channels-last")):
        pts = summary[fw]
        sizes = sorted(pts)
        med = [pts[b]["median"] for b in sizes]
        err = [[m - pts[b]["min"] for b, m in zip(sizes, med)], [pts[b]["max"] - m for b, m in zip(sizes, med)]]
        ax.errorbar(sizes, med, yerr=err, marker="o", capsize=3, label=label)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="training images/s (median, min-max)",
           title=f"{model}: training throughput against batch size (2-core CPU)")
    ax.set_xticks(sorted(summary["jaxnets"]))
    ax.set_xticklabels([str(b) for b in sorted(summary["jaxnets"])])
    ratio = summary["ratio"]
    twin = ax.twinx()
    twin.plot(sorted(ratio), [ratio[b] for b in sorted(ratio)], "k--", marker="x", label="jaxnets / torch")
    twin.axhline(1.0, color="grey", lw=0.5)
    twin.set_ylabel("jaxnets / torch (dashed)")
    twin.set_ylim(0, max(1.5, 1.1 * max(ratio.values(), default=1.0)))
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=MODELS)
    parser.add_argument("--batch-sizes", default="32,64,128,256,512,1024")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=3.0)
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8 and 16, 2 timed steps, 1 repeat")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    sizes = [8, 16] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    if args.quick:
        args.repeats, args.min_time, args.min_steps, args.max_steps, args.warmup = 1, 0.0, 2, 2, 1
    runs = measure(args.model, sizes, repeats=args.repeats, min_time=args.min_time, min_steps=args.min_steps,
                   max_steps=args.max_steps, warmup=args.warmup, timeout=args.timeout)
    summary = curves(runs)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"batch_scaling_{args.model}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": machine(), "model": args.model, "summary": summary, "runs": runs}, f, indent=1)
    plot(args.model, summary, stem + ".png")
    for b in sorted(summary["ratio"]):
        print(f"batch {b}: jaxnets {summary['jaxnets'][b]['median']:,.0f} images/s, torch channels-last "
              f"{summary['torch_cl'][b]['median']:,.0f}, ratio {summary['ratio'][b]:.2f}")
    return summary


if __name__ == "__main__":
    main()
