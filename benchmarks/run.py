"""Benchmark jaxnets against raw Flax and PyTorch: training and inference throughput, compile time, memory.

Run (from the repository root):

    python -m benchmarks.run                                # all models, all frameworks, batch 128, 3 repeats
    python -m benchmarks.run --model resnet18 --repeats 4 --frameworks jaxnets,flax,torch_cl
    python -m benchmarks.run --quick --out /tmp/bench       # seconds-long smoke run (batch 8, 2 steps)
    python -m benchmarks.run --extras fit,pipeline          # fit overhead and input-pipeline throughput
    python -m benchmarks.run --device gpu --precision float32,bfloat16 --frameworks jaxnets,flax,torch_cl
    python -m benchmarks.gpu_quick                          # that table on one GPU in a few minutes

Every measurement runs in its own subprocess (`benchmarks/_worker.py`); each repeat visits the
frameworks in a rotated order so that drift of a shared machine hits all of them alike. Results:
`<out>/<model>.json` (every process's numbers, then per framework and task the median, min and max
over the repeats and the ratios to jaxnets), `<out>/extras.json` for `--extras`, and a markdown table
printed at the end.

Device and precision: `--device cpu` (default) or `gpu`; `--precision float32` (default), `bfloat16`, or
both, comma-separated. On a GPU the JAX workers run with `JAX_PLATFORMS=cuda` and the torch workers on
`device="cuda"` (every timed step synchronised); bfloat16 is jaxnets' `precision="bfloat16"` policy, Flax's
`dtype=bfloat16` modules and `torch.autocast("cuda", dtype=torch.bfloat16)`. Before any worker starts,
`--device gpu` checks in one subprocess that both frameworks see a GPU (`jax.devices("cuda")`,
`torch.cuda.is_available()`) and otherwise exits with one line naming what is missing and how to install it.
bfloat16 on a CPU is allowed for the JAX frameworks only: it exercises the bfloat16 code paths
(numerics), and its speed says nothing about an accelerator's. Results of another device or precision
than cpu/float32 go to `<model>_<device>_<precision>.json`, so they never overwrite the CPU tables.
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
ALL_FRAMEWORKS = FRAMEWORKS + ("jaxnets_folded", "jaxnets_refbn", "jaxnets_plainconv", "jaxnets_xladefault",
                               "jaxnets_xlaops")
TASKS = ("train", "infer")
DEVICES = ("cpu", "gpu")
PRECISIONS = ("float32", "bfloat16")
JAX_PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}  # what the JAX workers get as JAX_PLATFORMS
CPU_BFLOAT16_NOTE = ("bfloat16 on CPU measures numerics, not speed: it runs the bfloat16 code paths, its timings "
                     "say nothing about an accelerator's, and torch's CPU autocast is not benchmarked here")
JAX_GPU_INSTALL = 'pip install -U "jax[cuda13]" (or "jax[cuda12]" for a CUDA 12 driver)'
TORCH_GPU_INSTALL = ("pip install torch --index-url https://download.pytorch.org/whl/cu128 (the CUDA version "
                     "your driver supports: https://pytorch.org/get-started/locally/)")
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


def is_torch(framework: str) -> bool:
    return framework.startswith("torch")


def worker_env(framework: str, *, device: str, xla_flags: str | None = None, common_env: dict | None = None) -> dict:
    """The environment variables one worker gets on top of this process's: `common_env` (`--env`) for every
    worker; for the JAX ones `JAX_PLATFORMS` (cpu, or cuda for `device="gpu"`, so a GPU machine's CPU table
    stays a CPU table and a GPU table never falls back to the CPU) and `XLA_FLAGS` when `xla_flags` is given."""
    env = dict(common_env or {})
    if not is_torch(framework):
        env["JAX_PLATFORMS"] = JAX_PLATFORMS[device]
        if xla_flags is not None:
            env["XLA_FLAGS"] = xla_flags
    return env


def worker_config(task: str, framework: str, model: str, *, device: str, precision: str, batch_size: int,
                  warmup: int, min_steps: int, min_time: float, max_steps: int, repeat: int) -> dict:
    """The JSON config of one throughput measurement (`benchmarks/_worker.py` documents the keys)."""
    return {"task": task, "framework": framework, "model": model, "device": device, "precision": precision,
            "warmup": warmup, "batch_size": batch_size, "min_steps": min_steps, "min_time": min_time,
            "max_steps": max_steps, "repeat": repeat}


def result_name(model: str, *, device: str = "cpu", precision: str = "float32", tag: str = "") -> str:
    """`<model>[_<device>_<precision>][_<tag>]`: cpu/float32 keeps the historical `<model>.json`."""
    name = model if (device, precision) == ("cpu", "float32") else f"{model}_{device}_{precision}"
    return f"{name}_{tag}" if tag else name


# Run in a fresh interpreter by `probe_gpu`: what each framework sees, as one JSON line.
_PROBE = r"""
import importlib.metadata as md, json, re
out = {}
try:
    import jax
    out["jax_version"] = jax.__version__
    out["jax_cuda_plugins"] = sorted({d.metadata["Name"] for d in md.distributions()
                                      if re.fullmatch(r"jax[-_]cuda\d+[-_](plugin|pjrt)", d.metadata["Name"] or "")})
    try:
        out["jax_devices"] = [d.device_kind for d in jax.devices("cuda")]
    except Exception as e:
        out["jax_error"] = (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:200]
except ImportError as e:
    out["jax_error"] = f"ImportError: {e}"
try:
    import torch
    out["torch_version"], out["torch_cuda"] = torch.__version__, torch.version.cuda
    out["torch_devices"] = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                            if torch.cuda.is_available() else [])
except ImportError as e:
    out["torch_error"] = f"ImportError: {e}"
print("GPU_PROBE " + json.dumps(out))
"""


def probe_gpu(*, timeout: float = 120.0) -> dict:
    """What JAX (with `JAX_PLATFORMS=cuda`, as its workers) and torch see, from one fresh interpreter."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                              check=False, env={**os.environ, "JAX_PLATFORMS": JAX_PLATFORMS["gpu"]})
    except subprocess.TimeoutExpired:
        return {"probe_error": f"the GPU probe took over {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("GPU_PROBE "):
            return json.loads(line[len("GPU_PROBE "):])
    return {"probe_error": ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1][:200]}


def gpu_problems(probe: dict, *, jax_needed: bool, torch_needed: bool) -> list[str]:
    """What keeps `--device gpu` from running, one phrase per framework with its fix; [] when nothing does."""
    if "probe_error" in probe:
        return [f"the GPU probe failed ({probe['probe_error']})"]
    problems = []
    if jax_needed and not probe.get("jax_devices"):
        if "jax_version" not in probe:
            problems.append(f"JAX is not importable ({probe.get('jax_error')}): {JAX_GPU_INSTALL}")
        elif not probe.get("jax_cuda_plugins"):
            problems.append(f"no CUDA jaxlib (jax {probe['jax_version']} has no jax-cuda plugin installed): "
                            f"{JAX_GPU_INSTALL}")
        else:
            problems.append(f"JAX's CUDA plugin ({', '.join(probe['jax_cuda_plugins'])}) found no GPU "
                            f"({probe.get('jax_error')}): check nvidia-smi, the driver and CUDA_VISIBLE_DEVICES")
    if torch_needed and not probe.get("torch_devices"):
        if "torch_version" not in probe:
            problems.append(f"PyTorch is not importable ({probe.get('torch_error')}): {TORCH_GPU_INSTALL}")
        elif probe.get("torch_cuda") is None:
            problems.append(f"torch {probe['torch_version']} is a CPU-only wheel: {TORCH_GPU_INSTALL}")
        else:
            problems.append(f"torch {probe['torch_version']} (CUDA {probe['torch_cuda']}) sees no GPU: check "
                            f"nvidia-smi, that the driver supports CUDA {probe['torch_cuda']}, "
                            f"and CUDA_VISIBLE_DEVICES")
    return problems


def check_gpu(frameworks, *, probe: dict | None = None) -> dict:
    """Exit with one line naming what is missing unless every framework in `frameworks` sees a GPU.

    Returns the probe (its device names go into the results). Raises: SystemExit with the message."""
    probe = probe_gpu() if probe is None else probe
    problems = gpu_problems(probe, jax_needed=any(not is_torch(f) for f in frameworks),
                            torch_needed=any(is_torch(f) for f in frameworks))
    if problems:
        raise SystemExit("benchmarks.run: --device gpu needs a GPU visible to every framework measured: "
                         + "; ".join(problems) + ".")
    return probe


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
                                         "peak_rss_delta_mb", "device_peak_mb", "loadavg_1m")}
        base = out[task].get("jaxnets", {}).get("images_per_s")
        for fw, res in out[task].items():
            if base and res.get("images_per_s"):
                # ratio of medians: > 1 means jaxnets is faster than `fw`
                res["jaxnets_over_this"] = base["median"] / res["images_per_s"]["median"]
    return out


def table(model: str, summary: dict, *, device: str = "cpu", precision: str = "float32",
          device_kind: str | None = None) -> str:
    """The markdown table of one model; its heading names the device (and its kind) and the precision."""
    gpu = device == "gpu"
    where = f"{device}{f' ({device_kind})' if device_kind else ''}, {precision}"
    memory = "peak device MB" if gpu else "peak RSS MB (delta)"
    header = f"| task | framework | images/s median (min-max) | compile s | {memory} | jaxnets / this |"
    rows = [f"### {model}: {where}", "", header, "| --- | --- | --- | --- | --- | --- |"]
    for task, per_fw in summary.items():
        for fw, res in per_fw.items():
            if "error" in res:
                rows.append(f"| {task} | {fw} | error: {res['error'][-80:]!r} | | | |")
                continue
            ips, comp, ratio = res["images_per_s"], res["compile_s"], res.get("jaxnets_over_this")
            if gpu:
                mem = res.get("device_peak_mb")
                mem_text = "" if mem is None else f"{mem['median']:,.0f}"
            else:
                mem, dmem = res["peak_rss_mb"], res["peak_rss_delta_mb"]
                mem_text = f"{mem['median']:,.0f} ({'' if dmem is None else format(dmem['median'], ',.0f')})"
            rows.append(f"| {task} | {fw} | {ips['median']:,.1f} ({ips['min']:,.1f}-{ips['max']:,.1f}) | "
                        f"{'' if comp is None else format(comp['median'], '.1f')} | {mem_text} | "
                        f"{'' if ratio is None else format(ratio, '.2f')} |")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, checked, with the lists split: `models`, `frameworks`, `tasks`, `extras`, `precisions`."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all", help=f"one of {MODELS} or 'all' (comma-separated list allowed)")
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="cpu, or gpu: JAX workers with JAX_PLATFORMS=cuda, torch workers on cuda")
    parser.add_argument("--precision", default="float32",
                        help=f"comma-separated, from {PRECISIONS}: bfloat16 is jaxnets' precision='bfloat16', "
                             "Flax's dtype=bfloat16 and torch.autocast(dtype=torch.bfloat16)")
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

    args.models = MODELS if args.model == "all" else tuple(args.model.split(","))
    args.frameworks = tuple(f for f in args.frameworks.split(",") if f)
    args.tasks = tuple(t for t in args.tasks.split(",") if t)
    args.extras = tuple(e for e in args.extras.split(",") if e)
    args.precisions = tuple(p for p in args.precision.split(",") if p)
    for name, values, allowed in (("--model", args.models, MODELS), ("--frameworks", args.frameworks, ALL_FRAMEWORKS),
                                  ("--tasks", args.tasks, TASKS), ("--extras", args.extras, ("fit", "pipeline")),
                                  ("--precision", args.precisions, PRECISIONS)):
        bad = sorted(set(values) - set(allowed))
        if bad:
            parser.error(f"{name}: unknown {bad}; choose from {list(allowed)}")
    if args.no_torch_compile:
        args.frameworks = tuple(f for f in args.frameworks if f != "torch_compile")
    torch_fws = [f for f in args.frameworks if is_torch(f)]
    if args.device == "cpu" and "bfloat16" in args.precisions and torch_fws:
        parser.error(f"--precision bfloat16 on --device cpu is for the JAX frameworks only (it measures numerics, "
                     f"not speed), got {torch_fws}; drop them from --frameworks or use --device gpu")
    if args.quick:
        args.batch_size, args.repeats, args.warmup = 8, 1, 1
        args.min_steps, args.min_time, args.max_steps = 2, 0.0, 2
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    frameworks, tasks, extras = args.frameworks, args.tasks, args.extras
    probe = check_gpu(frameworks + (("jaxnets",) if extras else ())) if args.device == "gpu" else None
    infer_batch = args.infer_batch_size or args.batch_size
    common_env = dict(kv.split("=", 1) for kv in args.env)
    os.makedirs(args.out, exist_ok=True)
    note = CPU_BFLOAT16_NOTE if args.device == "cpu" and "bfloat16" in args.precisions else None
    if note:
        print(f"note: {note}", flush=True)
    meta = {"machine": machine(), "argv": sys.argv[1:] if argv is None else list(argv),
            "xla_flags": args.xla_flags, "env": args.env, "device": args.device, "gpu_probe": probe}
    tables = []

    for model in args.models:
        for precision in args.precisions:
            runs = []
            for r in range(args.repeats):
                for task in tasks:
                    # rotate the order each repeat: drift of a shared machine hits every framework alike
                    order = frameworks[r % len(frameworks):] + frameworks[:r % len(frameworks)]
                    for fw in order:
                        if fw == "jaxnets_folded" and task != "infer" or fw == "jaxnets_refbn" and task != "train":
                            continue
                        cfg = worker_config(task, fw, model, device=args.device, precision=precision,
                                            batch_size=args.batch_size if task == "train" else infer_batch,
                                            warmup=args.warmup, min_steps=args.min_steps, min_time=args.min_time,
                                            max_steps=args.max_steps, repeat=r)
                        res = run_worker(cfg, timeout=args.timeout, env=worker_env(
                            fw, device=args.device, xla_flags=args.xla_flags, common_env=common_env))
                        runs.append(res)
                        memory = (f"device peak {res.get('device_peak_mb') or 0:.0f} MB" if args.device == "gpu"
                                  else f"peak {res.get('peak_rss_mb', 0):.0f} MB")
                        msg = (f"error: {res['error'][-200:]}" if "error" in res else
                               f"{res['images_per_s']:.1f} images/s, compile {res.get('compile_s') or 0:.1f} s, "
                               f"{memory}, load {res['loadavg_1m']:.1f}")
                        print(f"[{model} {precision} {task} {fw} #{r}] {msg}", flush=True)
            summary = summarise(runs, frameworks, tasks)
            kinds = sorted({r["device_kind"] for r in runs if r.get("device_kind")})
            name = result_name(model, device=args.device, precision=precision, tag=args.tag)
            with open(os.path.join(args.out, f"{name}.json"), "w") as f:
                json.dump({**meta, "model": model, "precision": precision, "device_kinds": kinds, "note": note,
                           "batch_size": args.batch_size, "infer_batch_size": infer_batch,
                           "repeats": args.repeats, "summary": summary, "runs": runs}, f, indent=1)
            tables.append(table(model, summary, device=args.device, precision=precision,
                                device_kind=" / ".join(kinds) if args.device == "gpu" else None))

    if extras:
        results = {}
        env = worker_env("jaxnets", device=args.device, xla_flags=args.xla_flags, common_env=common_env)
        for extra in extras:
            cfg = ({"task": "fit", "batch_size": args.batch_size, "epochs": 2 if args.quick else 4,
                    "examples": 256 if args.quick else None} if extra == "fit" else
                   {"task": "pipeline", "batch_size": args.batch_size, "epochs": 1 if args.quick else 3,
                    "examples": 256 if args.quick else 10000})
            results[extra] = [run_worker(cfg, timeout=args.timeout, env=env) for _ in range(args.repeats)]
            for res in results[extra]:
                print(f"[{extra}] " + json.dumps({k: v for k, v in res.items() if not isinstance(v, (list, dict))}))
        name = "extras" if args.device == "cpu" else f"extras_{args.device}"
        with open(os.path.join(args.out, f"{name}{f'_{args.tag}' if args.tag else ''}.json"), "w") as f:
            json.dump({**meta, "results": results}, f, indent=1)

    if note:
        tables.append(f"note: {note}")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
