"""Does the Grain input pipeline (`jaxnets.data.Loader`) keep up with PyTorch's DataLoader, and with training?

    python -m benchmarks.pipeline                         # -> benchmarks/results/pipeline.json (~5 minutes)
    python -m benchmarks.pipeline --quick --out /tmp/pipeline.json    # a smoke run

Generates, in a temporary directory, 10,000 32x32 PNGs and 2,000 224x224 JPEGs (10 class folders each;
smooth random images with noise, so the files compress like photographs). For each set, each worker count
in (0, 1, 2) and each loader, one pass over the set: decode (Pillow) and augment (random-resized crop to the
image size, horizontal flip), batches of 128 (PNG) or 64 (JPEG):

- "grain": `Loader(ImageFolder(root, rgb=True), batch, transforms=[RandomResizedCrop, RandomHorizontalFlip],
  worker_count=w)` (8 reading threads per process; its worker processes are forks of a fork server that
  imports numpy and Pillow, started once per session: see jaxnets/data/processes.py);
- "grain_1thread" (0 workers only): the same with `read_threads=1`, one thread like torch's 0 workers;
- "torch": `torch.utils.data.DataLoader(dataset, batch, shuffle=True, num_workers=w, drop_last=True)` over a
  map-style dataset doing the same work with Pillow and numpy (torchvision is not used or needed).

Each run makes 2 passes (epochs) with one loader: the first (timed from the loader's construction) includes
starting the workers (forks of the Loader's fork server, which the session's first Loader with workers
launches; torch forks the main process), the second does not (the Loader keeps its workers running into the
next epoch; torch is given `persistent_workers=True`).

Start in a fresh process ("start" in the results): for each loader and worker count, a new Python imports
jaxnets' Loader (so grain and jax) or torch, then times the loader's construction and its first batch: for
the Loader, that includes launching the fork server (a fresh Python importing numpy, Pillow and jaxnets'
reading code), which the in-session runs above reuse. Reported per pass: images/s, the
images/s after the first batch ("steady") and the seconds to the first batch. Variants alternate within
each repeat (their order rotated per repeat) so a shared machine's drift hits all alike; the 1-minute load
average is recorded before each run. Ratios are grain / torch of the medians over the repeats, for the
first pass, the later passes (Grain's threads have read up to 8 batches of them ahead during the first: a
small bias in its favour) and all passes together (images over seconds: no such bias).

Training: a CIFAR ResNet-18 step at batch 128 (`compile_steps("none")`, SGD), fed by the PNG Loader with the
fastest worker count measured; per step, the seconds waiting for the next batch and the seconds of the step
(synchronised). The step "waits on input" if the pipeline's images/s are below the step's, or if the waits
after the first batch are more than a few percent of the step time.

Result: see benchmarks/README.md, "Input pipeline (Grain) against torch's DataLoader".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

CONFIG = dict(
    sets={"png32": dict(count=10_000, size=32, format="PNG", batch=128),
          "jpeg224": dict(count=2_000, size=224, format="JPEG", batch=64)},
    workers=(0, 1, 2), start_workers=(1, 2), repeats=2, epochs=2, classes=10, train_batch=128, train_steps=3, seed=0)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def write_images(root: str, count: int, size: int, fmt: str, classes: int, seed: int) -> None:
    """`count` images `size x size x 3` as root/class<k>/<i>.png|jpg: a smooth random colour field plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    suffix = ".png" if fmt == "PNG" else ".jpg"
    for k in range(classes):
        os.makedirs(os.path.join(root, f"class{k}"), exist_ok=True)
    for i in range(count):
        a, b, c = rng.uniform(0, 255, (3, 3)).astype(np.float32)
        field = a[None, None, :] + np.multiply.outer(grid, b - a)[:, None, :] + np.multiply.outer(grid, c - a)[None]
        image = np.clip(field / 1.5 + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(root, f"class{i % classes}", f"{i:05d}{suffix}"), format=fmt)


# ----------------------------------------------------------------------------------------------
# the torch baseline: the same decode and augmentation, in Pillow and numpy
# ----------------------------------------------------------------------------------------------
def torch_dataset(samples: list, size: int):
    import torch.utils.data

    class Folder(torch.utils.data.Dataset):
        """Pillow decode to RGB, torchvision's RandomResizedCrop rule (python `random`, seeded per worker by
        torch), bilinear resize of the box, flip with probability 0.5."""

        def __len__(self):
            return len(samples)

        def __getitem__(self, index):
            path, label = samples[index]
            with Image.open(path) as pil:
                pil = pil.convert("RGB")
                width, height = pil.size
                left, top, w, h = crop_box(width, height)
                array = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)))
            if random.random() < 0.5:
                array = array[:, ::-1]
            return np.ascontiguousarray(array), label

    return Folder()


def crop_box(width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, w, h): torchvision's RandomResizedCrop.get_params, with python's `random`."""
    for _ in range(10):
        area = width * height * random.uniform(*scale)
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, width - w), random.randint(0, height - h), w, h
    side = min(width, height)  # these images are square: the fallback is the whole image
    return (width - side) // 2, (height - side) // 2, side, side


# ----------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------
def time_pass(batches, batch_size: int, start: float | None = None) -> dict:
    """Iterate once; images/s overall and after the first batch, seconds to the first batch (from `start`,
    default now)."""
    start = time.perf_counter() if start is None else start
    first, count = None, 0
    for batch in batches:
        count += batch_size
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return {"images": count, "images_per_s": count / (end - start), "first_batch_s": first - start,
            "steady_images_per_s": (count - batch_size) / max(end - first, 1e-9)}


def run_variant(name: str, root: str, spec: dict, workers: int, seed: int, epochs: int) -> list[dict]:
    """`epochs` consecutive passes of one loader: the first includes starting the workers, the next do not
    (Grain's stream and torch's `persistent_workers=True` keep them)."""
    from jaxnets import data
    from jaxnets.data import transforms

    if name.startswith("grain"):
        folder, loader_class = data.ImageFolder(root, rgb=True), data.Loader  # imported before the clock starts
        start = time.perf_counter()  # the first pass counts the construction: it launches the fork server
        loader = loader_class(folder, spec["batch"], seed=seed, worker_count=workers,
                             read_threads=1 if name == "grain_1thread" else 8,
                             transforms=[transforms.RandomResizedCrop(spec["size"]), transforms.RandomHorizontalFlip()])
        passes = []
        for epoch in range(epochs):
            with loader.epoch(epoch) as it:
                passes.append(time_pass(it, spec["batch"], start if epoch == 0 else None))
        loader.close()
        return passes
    import torch

    torch.manual_seed(seed)
    samples = data.ImageFolder(root).samples  # the same files, listed by torchvision's rule
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(torch_dataset(samples, spec["size"]), batch_size=spec["batch"],
                                         shuffle=True, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
    return [time_pass(loader, spec["batch"], start if epoch == 0 else None) for epoch in range(epochs)]


def first_batch_in_fresh_process(name: str, root: str, spec: dict, workers: int) -> float:
    """Seconds from the loader's construction to its first batch, in a new Python (`--start` below), where
    jaxnets' Loader (grain, jax) or torch is imported before the clock starts."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--start", name, root, str(spec["size"]),
                           str(spec["batch"]), str(workers)], capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode:
        raise RuntimeError(f"the start probe failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def start_probe(name: str, root: str, size: int, batch: int, workers: int) -> None:
    """`--start`: print the seconds from constructing the loader to its first batch."""
    if name == "grain":
        from jaxnets.data import pipeline, sources, transforms

        folder = sources.ImageFolder(root, rgb=True)
        start = time.perf_counter()
        loader = pipeline.Loader(folder, batch, worker_count=workers,
                                 transforms=[transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()])
        with loader.epoch(0) as it:
            next(it)
        seconds = time.perf_counter() - start
        loader.close()
    else:
        import torch.utils.data

        from jaxnets.data import sources

        samples = sources.ImageFolder(root).samples
        start = time.perf_counter()
        loader = torch.utils.data.DataLoader(torch_dataset(samples, size), batch_size=batch, shuffle=True,
                                             num_workers=workers, drop_last=True)
        next(iter(loader))
        seconds = time.perf_counter() - start
    print(f"{seconds:.4f}")


def train_check(root: str, workers: int, config: dict) -> dict:
    """CIFAR ResNet-18 steps at batch 128 fed by the PNG Loader: waits for input against step times."""
    import jax

    from jaxnets import data, models
    from jaxnets.data import transforms
    from jaxnets.train import compile_steps, optimizer
    from jaxnets.train.state import TrainState

    batch = config["train_batch"]
    loader = data.Loader(data.ImageFolder(root, rgb=True), batch, seed=0, worker_count=workers,
                         transforms=[transforms.RandomResizedCrop(32), transforms.RandomHorizontalFlip()])
    model = models.create("resnet18", variant="cifar", num_classes=config["classes"])
    state = TrainState.create(model, optimizer("sgd", learning_rate=0.1, momentum=0.9),
                              np.zeros((1, 32, 32, 3), np.uint8), 0)
    steps = compile_steps("none")
    placed = steps.put_state(state)
    waits, step_times = [], []
    with loader.epoch(0) as it:
        for _ in range(config["train_steps"] + 1):  # the first step compiles: left out
            t0 = time.perf_counter()
            host = next(it)
            t1 = time.perf_counter()
            placed, metrics = steps.train(placed, steps.put_batch(host))
            jax.block_until_ready(metrics)
            waits.append(t1 - t0)
            step_times.append(time.perf_counter() - t1)
    waits, step_times = waits[1:], step_times[1:]
    return {"workers": workers, "batch": batch, "wait_s": waits, "step_s": step_times,
            "step_images_per_s": batch * len(step_times) / sum(step_times),
            "wait_fraction": sum(waits) / (sum(waits) + sum(step_times))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=CONFIG["repeats"])
    parser.add_argument("--quick", action="store_true", help="a few hundred images, one repeat: a smoke run")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pipeline.json"))
    parser.add_argument("--start", nargs=5, metavar=("LOADER", "ROOT", "SIZE", "BATCH", "WORKERS"),
                        help="internal: time one loader's start in this fresh process (see first_batch_in_fresh_process)")
    args = parser.parse_args(argv)
    if args.start:
        name, root, size, batch, workers = args.start
        start_probe(name, root, int(size), int(batch), int(workers))
        return {}
    config = {**CONFIG, "repeats": args.repeats}
    if args.quick:
        config = {**config, "repeats": 1, "train_steps": 1,
                  "sets": {k: {**v, "count": 4 * v["batch"]} for k, v in CONFIG["sets"].items()}}
    import jax
    import torch

    results: dict = {"config": config, "machine": platform.machine(), "cpu_count": os.cpu_count(),
                     "versions": {"jax": jax.__version__, "torch": torch.__version__,
                                  "grain": __import__("grain").__version__, "pillow": Image.__version__},
                     "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "runs": {}, "start": {},
                     "loadavg": []}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {}
        for name, spec in config["sets"].items():
            t = time.perf_counter()
            roots[name] = os.path.join(tmp, name)
            write_images(roots[name], spec["count"], spec["size"], spec["format"], config["classes"], config["seed"])
            print(f"{name}: {spec['count']} files written in {time.perf_counter() - t:.1f} s", flush=True)
        variants = [(s, w, loader) for s in config["sets"] for w in config["workers"]
                    for loader in (("grain", "grain_1thread", "torch") if w == 0 else ("grain", "torch"))]
        for repeat in range(config["repeats"]):
            shift = repeat % len(variants)
            for s, w, loader in variants[shift:] + variants[:shift]:  # rotated: drift hits every variant
                load = os.getloadavg()[0]
                passes = run_variant(loader, roots[s], config["sets"][s], w, repeat, config["epochs"])
                result = {"cold": passes[0], "warm": passes[1:], "loadavg_1min": load}
                results["runs"].setdefault(f"{s}/workers{w}/{loader}", []).append(result)
                results["loadavg"].append(load)
                print(f"{s} workers={w} {loader}: first epoch {passes[0]['images_per_s']:.0f} images/s (first batch "
                      f"{passes[0]['first_batch_s']:.2f} s), next {[round(p['images_per_s']) for p in passes[1:]]}, "
                      f"load {load:.1f}", flush=True)
            for w in config["start_workers"]:  # a fresh process per start: the fork server's launch included
                for loader in ("grain", "torch")[::1 if repeat % 2 == 0 else -1]:
                    load = os.getloadavg()[0]
                    seconds = first_batch_in_fresh_process(loader, roots["png32"], config["sets"]["png32"], w)
                    results["start"].setdefault(f"png32/workers{w}/{loader}", []).append(
                        {"first_batch_s": seconds, "loadavg_1min": load})
                    results["loadavg"].append(load)
                    print(f"fresh process, png32 workers={w} {loader}: first batch {seconds:.2f} s, load {load:.1f}",
                          flush=True)
        summary = {}
        for s in config["sets"]:
            for w in config["workers"]:
                runs = {k: results["runs"][f"{s}/workers{w}/{k}"] for k in ("grain", "torch")}
                cold = {k: statistics.median(r["cold"]["images_per_s"] for r in v) for k, v in runs.items()}
                warm = {k: statistics.median(p["images_per_s"] for r in v for p in r["warm"]) for k, v in runs.items()}
                # All passes together (images / seconds): unbiased by Grain reading the next epoch ahead.
                whole = {k: statistics.median(sum(p["images"] for p in [r["cold"], *r["warm"]])
                                              / sum(p["images"] / p["images_per_s"] for p in [r["cold"], *r["warm"]])
                                              for r in v) for k, v in runs.items()}
                summary[f"{s}/workers{w}"] = {
                    "grain_first_epoch": cold["grain"], "torch_first_epoch": cold["torch"],
                    "grain_next_epochs": warm["grain"], "torch_next_epochs": warm["torch"],
                    "grain_over_torch_first_epoch": cold["grain"] / cold["torch"],
                    "grain_over_torch_next_epochs": warm["grain"] / warm["torch"],
                    "grain_all_epochs": whole["grain"], "torch_all_epochs": whole["torch"],
                    "grain_over_torch_all_epochs": whole["grain"] / whole["torch"]}
        for key, runs in results["start"].items():
            summary[f"start/{key}"] = {"first_batch_s": statistics.median(r["first_batch_s"] for r in runs)}
        results["summary"] = summary
        best = max(config["workers"], key=lambda w: summary[f"png32/workers{w}"]["grain_next_epochs"])
        train = train_check(roots["png32"], best, config)
        train["pipeline_images_per_s"] = summary[f"png32/workers{best}"]["grain_next_epochs"]
        train["pipeline_over_step"] = train["pipeline_images_per_s"] / train["step_images_per_s"]
        train["loadavg_1min"] = os.getloadavg()[0]
        results["train"] = train
        print(f"ResNet-18 CIFAR step: {train['step_images_per_s']:.0f} images/s; pipeline ({best} workers) "
              f"{train['pipeline_images_per_s']:.0f} images/s; waiting {100 * train['wait_fraction']:.1f}% of the time",
              flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(summary, indent=1))
    return results


if __name__ == "__main__":
    main()
