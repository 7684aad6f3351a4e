"""Benchmark jaxnets against raw Flax and PyTorch: training and inference throughput, compile time, memory.

Run (from the repository root):

    python -m benchmarks.run                                # all models, all frameworks, batch 128, 3 repeats
    python -m benchmarks.run --model resnet18 --repeats 4 --frameworks jaxnets,flax,torch_cl
    python -m benchmarks.run --quick --out /tmp/bench       # seconds-long smoke run (batch 8, 2 steps)
    python -m benchmarks.run --extras fit,pipeline          # fit overhead and input-pipeline throughput

Every measurement runs in its own subprocess (`benchmarks/_worker.py`); each repeat visits the
frameworks in a rotated order so that drift of a shared machine hits all of them alike. Results:
`<out>/<model>.json` (every process's numbers, then per framework and task the median, min and max
over the repeats and the ratios to jaxnets), `<out>/extras.json` for `--extras`, and a markdown table
printed at the end.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

MODELS = ("lenet5", "resnet18", "vgg11_bn")
FRAMEWORKS = ("jaxnets", "flax", "torch", "torch_cl", "torch_compile")
ALL_FRAMEWORKS = FRAMEWORKS + ("jaxnets_folded", "jaxnets_refbn", "jaxnets_plainconv", "jaxnets_xladefault")
TASKS = ("train", "infer")
HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def run_worker(cfg: dict, *, timeout: float, env: dict | None = None) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON, or {"error": ...}."""
    cmd = [sys.executable, "-m", "benchmarks._worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(HERE),
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "config": cfg}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCHMARK_RESULT "):
            return json.loads(line[len("BENCHMARK_RESULT "):])
    return {"error": (proc.stderr or proc.stdout)[-2000:], "config": cfg}


def _stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict], frameworks, tasks) -> dict:
    """Per task and framework: median/min/max over processes of images/s, compile time and memory."""
    out: dict = {}
    for task in tasks:
        out[task] = {}
        for fw in frameworks:
            ok = [r for r in runs if "error" not in r and r["config"]["framework"] == fw and r["config"]["task"] == task]
            if not ok:
                errors = [r["error"][-300:] for r in runs if "error" in r and r["config"]["framework"] == fw
                          and r["config"]["task"] == task]
                if errors:
                    out[task][fw] = {"error": errors[0]}
                continue
            out[task][fw] = {key: _stats([r.get(key) for r in ok])
                             for key in ("images_per_s", "compile_s", "first_call_s", "peak_rss_mb",
                                         "peak_rss_delta_mb", "loadavg_1m")}
        base = out[task].get("jaxnets", {}).get("images_per_s")
        for fw, res in out[task].items():
            if base and res.get("images_per_s"):
                # ratio of medians: > 1 means jaxnets is faster than `fw`
                res["jaxnets_over_this"] = base["median"] / res["images_per_s"]["median"]
    return out


def table(model: str, summary: dict) -> str:
    rows = [f"### {model}", "", "| task | framework | images/s median (min-max) | compile s | peak RSS MB (delta) "
            "| jaxnets / this |", "| --- | --- | --- | --- | --- | --- |"]
    for task, per_fw in summary.items():
        for fw, res in per_fw.items():
            if "error" in res:
                rows.append(f"| {task} | {fw} | error: {res['error'][-80:]!r} | | | |")
                continue
            ips, comp, mem, dmem = (res["images_per_s"], res["compile_s"], res["peak_rss_mb"],
                                    res["peak_rss_delta_mb"])
            ratio = res.get("jaxnets_over_this")
            rows.append(f"| {task} | {fw} | {ips['median']:,.1f} ({ips['min']:,.1f}-{ips['max']:,.1f}) | "
                        f"{'' if comp is None else format(comp['median'], '.1f')} | "
                        f"{mem['median']:,.0f} ({'' if dmem is None else format(dmem['median'], ',.0f')}) | "
                        f"{'' if ratio is None else format(ratio, '.2f')} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all", help=f"one of {MODELS} or 'all' (comma-separated list allowed)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="processes per (model, task, framework)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"comma-separated, from {ALL_FRAMEWORKS}")
    parser.add_argument("--tasks", default="train,infer", help="comma-separated: train, infer")
    parser.add_argument("--extras", default="", help="comma-separated: fit, pipeline")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch_compile (slow cold compiles)")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds of timed steps per process (at least)")
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    parser.add_argument("--infer-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--xla-flags", default=None, help="XLA_FLAGS for the JAX workers (one experiment)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for every worker (repeatable), e.g. GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    parser.add_argument("--tag", default="", help="suffix of the result files, e.g. an experiment name")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per worker process")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 2 timed steps, 1 warm-up, 1 repeat")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="directory for the JSON results")
    args = parser.parse_args(argv)

    models = MODELS if args.model == "all" else tuple(args.model.split(","))
    frameworks = tuple(f for f in args.frameworks.split(",") if f)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    extras = tuple(e for e in args.extras.split(",") if e)
    for name, values, allowed in (("--model", models, MODELS), ("--frameworks", frameworks, ALL_FRAMEWORKS),
                                  ("--tasks", tasks, TASKS), ("--extras", extras, ("fit", "pipeline"))):
        bad = sorted(set(values) - set(allowed))
        if bad:
            parser.error(f"{name}: unknown {bad}; choose from {list(allowed)}")
    if args.no_torch_compile:
        frameworks = tuple(f for f in frameworks if f != "torch_compile")
    if args.quick:
        args.batch_size, args.repeats, args.warmup = 8, 1, 1
        args.min_steps, args.min_time, args.max_steps = 2, 0.0, 2
    infer_batch = args.infer_batch_size or args.batch_size
    env = {} if args.xla_flags is None else {"XLA_FLAGS": args.xla_flags}
    common_env = dict(kv.split("=", 1) for kv in args.env)
    os.makedirs(args.out, exist_ok=True)
    suffix = f"_{args.tag}" if args.tag else ""
    meta = {"machine": machine(), "argv": sys.argv[1:] if argv is None else list(argv),
            "xla_flags": args.xla_flags, "env": args.env}
    tables = []

    for model in models:
        runs = []
        for r in range(args.repeats):
            for task in tasks:
                # rotate the order each repeat: drift of a shared machine hits every framework alike
                order = frameworks[r % len(frameworks):] + frameworks[:r % len(frameworks)]
                for fw in order:
                    if fw == "jaxnets_folded" and task != "infer" or fw == "jaxnets_refbn" and task != "train":
                        continue
                    cfg = {"task": task, "framework": fw, "model": model, "warmup": args.warmup,
                           "batch_size": args.batch_size if task == "train" else infer_batch,
                           "min_steps": args.min_steps, "min_time": args.min_time, "max_steps": args.max_steps,
                           "repeat": r}
                    res = run_worker(cfg, timeout=args.timeout,
                                     env={**common_env, **({} if fw.startswith("torch") else env)})
                    runs.append(res)
                    msg = (f"error: {res['error'][-200:]}" if "error" in res else
                           f"{res['images_per_s']:.1f} images/s, compile {res.get('compile_s') or 0:.1f} s, "
                           f"peak {res['peak_rss_mb']:.0f} MB, load {res['loadavg_1m']:.1f}")
                    print(f"[{model} {task} {fw} #{r}] {msg}", flush=True)
        summary = summarise(runs, frameworks, tasks)
        with open(os.path.join(args.out, f"{model}{suffix}.json"), "w") as f:
            json.dump({**meta, "model": model, "batch_size": args.batch_size, "infer_batch_size": infer_batch,
                       "repeats": args.repeats, "summary": summary, "runs": runs}, f, indent=1)
        tables.append(table(model, summary))

    if extras:
        results = {}
        for extra in extras:
            cfg = ({"task": "fit", "batch_size": args.batch_size, "epochs": 2 if args.quick else 4,
                    "examples": 256 if args.quick else None} if extra == "fit" else
                   {"task": "pipeline", "batch_size": args.batch_size, "epochs": 1 if args.quick else 3,
                    "examples": 256 if args.quick else 10000})
            results[extra] = [run_worker(cfg, timeout=args.timeout, env={**common_env, **env}) for _ in range(args.repeats)]
            for res in results[extra]:
                print(f"[{extra}] " + json.dumps({k: v for k, v in res.items() if not isinstance(v, (list, dict))}))
        with open(os.path.join(args.out, f"extras{suffix}.json"), "w") as f:
            json.dump({**meta, "results": results}, f, indent=1)

    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
