"""Do averaged predictions beat single ones: an ensemble of independently seeded CNNs, test-time augmentation,
and Monte-Carlo dropout?

Claims (lecture notes, /work/shared/reference/001_f4e8d95f5b8d410b.txt, "Ensemble learning", "Dropout
ensemble interpretation", "Test-time data augmentation"): an ensemble ``M = sum_k theta_k m_k`` with well
chosen weights has a risk no larger than its best member's; test-time augmentation ``(1/K) sum_i M(T_i(X))``
"is an ensemble technique to improve the prediction" (AlexNet: crops and horizontal reflections); turning
dropout off at test time can be read as predicting with the ensemble of the 2^K thinned networks ("not a
very precise connection").

Setup: ``mnist_splits(n_train=1000)``, the 1,000 held-out digits as the test set. ``n_members``
``ConvNet(widths=(16, 32, 64), norm="batch", dropout=0.1)`` (``experiments/_nets.py``), identical except
for the seed (initial weights, batch order, dropout and augmentation keys), each trained by ``train.fit``
with Adam (cosine rate, peak 5e-3), batches of 50, random translations of up to 2 pixels
(``data.augment.random_translate``); the settings of ``regularization_small_data``'s "all" condition, 12
epochs instead of 15. After training, each member's BatchNorm statistics are recomputed with dropout off
(``train.recompute_batch_stats`` over the training images): the running averages were collected with
dropout on and cost the deterministic prediction accuracy (``regularization_small_data``). Ensembles and
TTA use the recomputed statistics; the numbers with the running averages are recorded too. Predictions
are softmax probabilities; error and negative log-likelihood (NLL, ``layers.cross_entropy`` of the
log-probabilities) on the test set.
  ensemble   ``train.ensemble_predict`` (equal weights) of all members, and the mean over all
             subsets of k members for k = 1 .. n_members; against the mean member and the best member
             (best ON THE TEST SET: an oracle choice, which flatters the single model);
  TTA        ``train.tta_predict`` per member: (shift) the image itself plus ``tta_shifts`` random
             translations of up to ``tta_max_shift`` pixels (the training augmentation; fixed keys);
             (flip) the image and its mirror image ``hflip``, AlexNet's choice, which does not fit digits: a
             mirrored 2, 3, 4, 5, 7 or 9 is not that digit and the nets never saw mirrored digits;
  MC dropout ``mc_passes`` forward passes with dropout ON and averaged softmax, against the one
             deterministic pass (dropout off, the weight-scaling rule), each member with its running BN
             averages (collected with dropout on, like the passes); the deterministic pass with the
             recomputed statistics is the stronger baseline. BatchNorm must stay in evaluation
             mode: with ``train=True`` it would normalise by the statistics of the test batch (and want to
             update its running averages), so the prediction for a digit would depend on the other digits
             in its batch, an effect that has nothing to do with dropout. ``mc_dropout_predict`` below calls
             the model with ``train=True`` and intercepts every ``jaxnets.nn.BatchNorm`` call to run it with
             ``train=False``. For contrast, member 0 is also run with BatchNorm in training mode (statistics
             of test batches of ``mc_bn_train_batch``, 0 skips it; in the stored order, sorted by class,
             and shuffled), and with the recomputed (dropout-off) statistics under the passes.

Run: python -m experiments.ensembles_and_tta  ->  experiments/results/ensembles_and_tta/
Redraw the figure from the committed results.json (no training): python -c "from experiments.ensembles_and_tta
import replot; replot()"
Result (default config, 5 members, 1,000 test digits, a quiet 2-core CPU, 189 s): the ensemble reproduced, TTA
with shifts partly, TTA with flips is harmful as expected, MC dropout mostly BatchNorm's variance shift. The
5-seed ensemble errs on 3.7% of the test digits, against 4.96% for the mean member and 4.2% for the best one
(chosen on the test set); NLL 0.214 against 0.224 (mean) and 0.213 (best): averaging underconfident members
barely moves the NLL. TTA with 8 random shifts of up to 2 pixels: 4.96% -> 4.56% per member (all 5
improve), NLL not improved (0.224 -> 0.225), and 3.9% for the ensemble of TTA predictions (no gain over
the plain ensemble). TTA with mirror images: 10.5% per member. MC dropout (16 passes, BN in evaluation mode
with its running averages): 4.84% and NLL 0.245 against 5.88% / 0.306 for the deterministic pass with the
same statistics; the deterministic pass with recomputed statistics has 4.96% / 0.224: most of the gain comes
from BN's variance shift, and averaging adds 0.1 points in error (better for 3 of 5 members, one unchanged,
one worse) at a worse NLL. BatchNorm in training mode inside the MC passes: 80.9% error on test batches in
their stored (class-sorted) order, 5.3% on shuffled batches. Details: experiments/README.md.
"""
from __future__ import annotations

import functools
import itertools
import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import finish_figure, results_folder, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import layers, train
from jaxnets import nn as jnn
from jaxnets.data import augment as aug

CONFIG = dict(
    preset="default", seeds=(0, 1, 2, 3, 4), n_train=1000, widths=(16, 32, 64), norm="batch", dropout=0.1,
    max_shift=2, epochs=12, batch_size=50, peak_lr=5e-3,
    tta_shifts=8, tta_max_shift=2, tta_seed=0, mc_passes=16, mc_seed=0, mc_bn_train_batch=100,
)
FULL_CONFIG = dict(CONFIG, preset="full", seeds=tuple(range(10)), n_train=4000, epochs=30, mc_passes=64)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=100, widths=(4, 8, 8), epochs=1, tta_shifts=2,
                   mc_passes=2, mc_bn_train_batch=0)


def scores(probs: jax.Array, labels: jax.Array) -> dict:
    """Test error and NLL of probabilities [N, K] (NLL = cross-entropy of the log-probabilities)."""
    accuracy, nll = _scores(probs, labels)
    n = len(labels)
    return {"error": (n - round(float(accuracy) * n)) / n, "nll": float(nll)}  # an exact count of mistakes


@jax.jit
def _scores(probs: jax.Array, labels: jax.Array):
    logp = jnp.log(jnp.clip(probs, 1e-12, 1.0))  # a probability that underflowed to 0 costs 27.6 nats, not inf
    return layers.accuracy(probs, labels), layers.cross_entropy(logp, labels)


def train_members(config: dict, train_set: dict) -> list:
    steps = config["epochs"] * (len(train_set["label"]) // config["batch_size"])
    optimizer = train.optimizer("adam", learning_rate=train.schedules.cosine(config["peak_lr"], steps))
    model = ConvNet(widths=tuple(config["widths"]), norm=config["norm"], dropout=config["dropout"])
    augment = functools.partial(aug.random_translate, max_shift=config["max_shift"])
    states, running = [], []
    for seed in config["seeds"]:
        start = time.perf_counter()
        state, _ = train.fit(model, train_set, epochs=config["epochs"], batch_size=config["batch_size"],
                             optimizer=optimizer, seed=seed, augment=augment, progress=False)
        running.append(state)
        # BatchNorm statistics recomputed with dropout off (what the layers see at test time): the running
        # averages were collected with dropout on (see regularization_small_data).
        states.append(train.recompute_batch_stats(state, train_set))
        print(f"member seed {seed}: trained in {time.perf_counter() - start:.0f} s", flush=True)
    return states, running


def mc_dropout_predict(state, x: jax.Array, key: jax.Array, passes: int, *, bn_train: bool = False) -> jax.Array:
    """Softmax of ``passes`` forward passes with dropout on, one key each: [passes, N, K].

    ``bn_train=False`` (MC dropout proper): every ``jaxnets.nn.BatchNorm`` runs in evaluation mode (running
    statistics) while dropout is on. ``bn_train=True``: BatchNorm normalises by the batch's own statistics
    (the updated running averages are discarded), the mistake this experiment illustrates.
    """
    one = _stochastic_pass(state.apply_fn, bn_train)
    return jnp.stack([one(state.variables, x, k) for k in jax.random.split(key, passes)])


@functools.lru_cache(maxsize=None)
def _stochastic_pass(apply_fn, bn_train: bool):
    """One jitted dropout-on forward pass ``(variables, x, key) -> softmax``, compiled once per model."""
    def bn_eval(next_fun, args, kwargs, context):
        if isinstance(context.module, jnn.BatchNorm) and context.method_name == "__call__":
            kwargs = {**kwargs, "train": False}
        return next_fun(*args, **kwargs)

    @jax.jit
    def one(variables, x, key):
        if bn_train:
            logits, _ = apply_fn(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
        else:
            with nn.intercept_methods(bn_eval):
                logits = apply_fn(variables, x, train=True, rngs={"dropout": key})
        return jax.nn.softmax(logits, axis=-1)

    return one


def main(config=CONFIG, *, out=None):
    """Ensembles of seeds, test-time augmentation and MC dropout against single deterministic predictions."""
    started, cpu_started = time.perf_counter(), time.process_time()
    train_set, test_set = mnist_splits(config["n_train"], seed=0)
    x, y = aug.to_float(test_set["image"]), jnp.asarray(test_set["label"])
    states, running = train_members(config, train_set)
    members = [(s.apply_fn, s.variables) for s in states]
    m = len(members)

    # Plain predictions and the ensemble.
    apply_fn, variables = states[0].apply_fn, [v for _, v in members]  # one model, m sets of variables
    predict_one = jax.jit(lambda v, x: train.ensemble_predict([(apply_fn, v)], x))
    single = [predict_one(v, x) for v in variables]
    ensemble = jax.jit(lambda vs, x: train.ensemble_predict([(apply_fn, v) for v in vs], x))(variables, x)
    single_scores = [scores(p, y) for p in single]
    running_scores = [scores(predict_one(r.variables, x), y) for r in running]
    by_size = {}
    for k in range(1, m + 1):  # every subset of k members (the mean of their probabilities)
        subsets = [scores(jnp.mean(jnp.stack([single[i] for i in c]), axis=0), y)
                   for c in itertools.combinations(range(m), k)]
        by_size[k] = {key: float(np.mean([s[key] for s in subsets])) for key in ("error", "nll")}
    ensemble_results = {
        "members": single_scores, "ensemble": scores(ensemble, y),
        "mean_member": {key: float(np.mean([s[key] for s in single_scores])) for key in ("error", "nll")},
        "best_member_oracle": {key: float(np.min([s[key] for s in single_scores])) for key in ("error", "nll")},
        "by_size": by_size,
        "members_running_bn_stats": running_scores,
        "mean_member_running_bn_stats": {key: float(np.mean([s[key] for s in running_scores]))
                                         for key in ("error", "nll")},
        # the library's ensemble_predict is the mean of the members' softmax outputs
        "ensemble_predict_vs_mean_max_abs_diff": float(jnp.max(jnp.abs(ensemble - jnp.mean(jnp.stack(single), 0)))),
    }

    # Test-time augmentation.
    keys = jax.random.split(jax.random.key(config["tta_seed"]), config["tta_shifts"])
    transforms = {
        "shift": [lambda im: im] + [functools.partial(_translate, k, max_shift=config["tta_max_shift"]) for k in keys],
        "flip": [lambda im: im, aug.hflip],
    }
    tta = {}
    for name, fns in transforms.items():
        predict = jax.jit(lambda v, x, fns=fns: train.tta_predict(apply_fn, v, x, transforms=fns))
        probs = [predict(v, x) for v in variables]
        per_member = [scores(p, y) for p in probs]
        tta[name] = {"members": per_member,
                     "mean_member": {key: float(np.mean([s[key] for s in per_member])) for key in ("error", "nll")},
                     "ensemble_of_tta": scores(jnp.mean(jnp.stack(probs), axis=0), y),
                     "transforms": len(fns)}

    # Monte-Carlo dropout, with BatchNorm's running averages: collected during training with dropout on, they
    # match the stochastic passes (the recomputed statistics match the deterministic pass).
    mc = {"members": []}
    key = jax.random.key(config["mc_seed"])
    passes = [t for t in (1, 2, 4, 8, 16, 32, 64, 128) if t <= config["mc_passes"]]
    for i, state in enumerate(running):
        samples = mc_dropout_predict(state, x, jax.random.fold_in(key, i), config["mc_passes"])
        mc["members"].append({"deterministic": running_scores[i], "deterministic_recomputed_bn": single_scores[i],
                              "one_pass": [scores(s, y) for s in samples],
                              "by_passes": {t: scores(jnp.mean(samples[:t], axis=0), y) for t in passes}})
    mc["passes"] = passes
    mean = lambda rows: {key: float(np.mean([r[key] for r in rows])) for key in ("error", "nll")}  # noqa: E731
    mc["mean_member"] = {
        "deterministic": mean([r["deterministic"] for r in mc["members"]]),
        "deterministic_recomputed_bn": mean([r["deterministic_recomputed_bn"] for r in mc["members"]]),
        "one_pass": mean([s for r in mc["members"] for s in r["one_pass"]]),
        "by_passes": {t: mean([r["by_passes"][t] for r in mc["members"]]) for t in passes}}
    # Contrasts on member 0: the recomputed (dropout-off) statistics under the stochastic passes, and
    # BatchNorm in training mode (batch statistics of the test batch). The test set is stored sorted by
    # class, so its consecutive batches hold one digit each; a fixed shuffle gives mixed batches.
    samples = mc_dropout_predict(states[0], x, jax.random.fold_in(key, 0), config["mc_passes"])
    mc["member0_recomputed_bn_stats"] = {t: scores(jnp.mean(samples[:t], axis=0), y) for t in passes}
    b = config["mc_bn_train_batch"]
    if b:  # 0: skipped (the tiny config: one compilation less)
        order = np.random.default_rng(config["mc_seed"]).permutation(len(y))
        for name, idx in (("sorted_batches", np.arange(len(y))), ("shuffled_batches", order)):
            probs = jnp.concatenate([
                jnp.mean(mc_dropout_predict(running[0], x[idx[j:j + b]], jax.random.fold_in(key, 0),
                                            config["mc_passes"], bn_train=True), axis=0)
                for j in range(0, len(y), b)])
            mc[f"member0_bn_train_mode_{name}"] = scores(probs, y[idx])

    results = {"n_train": len(train_set["label"]), "n_test": len(y), "ensemble": ensemble_results, "tta": tta,
               "mc_dropout": mc, "cpu_time_s": time.process_time() - cpu_started}
    print({k: results[k] for k in ("ensemble", "tta")}, flush=True)
    print(mc["mean_member"], {k: v for k, v in mc.items() if k.startswith("member0")}, flush=True)
    return write_results(__file__, config, results, figures={"ensembles_and_tta": plot(results, config)}, out=out,
                         started=started)


def _translate(key, images, *, max_shift):
    return aug.random_translate(key, images, max_shift=max_shift)


def plot(results: dict, config: dict):
    """The figure, a function of ``results`` and ``config`` alone (``replot`` redraws it from results.json).

    Spread over the members (the seeds): every single-member quantity is drawn as the mean +- one standard
    error over the members (``_protocol.band`` for the MC dropout curve, shaded bands for the horizontal
    reference lines, error bars for the single members and the bars); the ensembles are single numbers (one
    ensemble of all members; the mean over subsets of k members, whose spread results.json does not record).
    Every y axis starts at 0 (error and NLL are both >= 0), so gaps of a few tenths of a point are not blown up.
    """
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    e, tta, mc = results["ensemble"], results["tta"], results["mc_dropout"]
    m = len(e["members"])
    sizes = sorted(e["by_size"], key=int)
    passes = mc["passes"]

    def per_member(rows, key, scale):  # mean and sem over the members of one quantity
        est = protocol.estimate([scale * r[key] for r in rows])
        return est["mean"], est["sem"] if est["n"] > 1 else 0.0

    def reference(ax, rows, key, scale, color, ls, label):  # a horizontal mean line with its +- sem band
        mean, sem = per_member(rows, key, scale)
        ax.axhline(mean, color=color, ls=ls, lw=1, label=label)
        ax.axhspan(mean - sem, mean + sem, color=color, alpha=0.12, lw=0)

    for ax, key, label in ((axes[0], "error", "test error (%)"), (axes[1], "nll", "test NLL (nats)")):
        scale = 100 if key == "error" else 1
        ax.plot([int(k) for k in sizes], [scale * e["by_size"][k][key] for k in sizes], "o-", color="C0",
                label="ensemble of k seeds (mean over subsets)")
        ax.plot([1] * m, [scale * s[key] for s in e["members"]], "k.", ms=4, label="single members")
        mean, sem = per_member(e["members"], key, scale)
        ax.errorbar([1], [mean], yerr=[sem], fmt="none", ecolor="k", capsize=5, lw=1.5,
                    label="single members: mean +- sem")
        # key: the JSON's pass counts are strings, a fresh run's are ints
        by_passes = [[scale * r["by_passes"][t if t in r["by_passes"] else str(t)][key] for t in passes]
                     for r in mc["members"]]
        protocol.band(ax, passes, by_passes, color="C3", marker="s",
                      label="MC dropout, T passes (mean member +- sem)")
        reference(ax, [r["deterministic"] for r in mc["members"]], key, scale, "C3", "--",
                  "deterministic pass, dropout off, running BN stats (mean member +- sem)")
        reference(ax, e["members"], key, scale, "C0", ":",
                  "deterministic pass, recomputed BN stats (mean member +- sem)")
        reference(ax, tta["shift"]["members"], key, scale, "C2", "--",
                  f"TTA, image + {tta['shift']['transforms'] - 1} shifts (mean member +- sem)")
        ax.set(xscale="log", xlabel="members k / passes T", ylabel=label)
        ticks = sorted({*passes, *(int(k) for k in sizes)})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    names = ["plain", "TTA shift", "TTA flip", f"MC dropout ({passes[-1]})"]
    last = passes[-1] if passes[-1] in mc["members"][0]["by_passes"] else str(passes[-1])
    rows = [e["members"], tta["shift"]["members"], tta["flip"]["members"],
            [r["by_passes"][last] for r in mc["members"]]]
    bars = [per_member(r, "error", 100) for r in rows]
    ens = [e["ensemble"]["error"], tta["shift"]["ensemble_of_tta"]["error"], tta["flip"]["ensemble_of_tta"]["error"]]
    xs = np.arange(len(names))
    axes[2].bar(xs - 0.2, [b[0] for b in bars], 0.4, yerr=[b[1] for b in bars], capsize=4,
                label=f"mean single member +- sem ({m} members)")
    axes[2].bar(xs[:3] + 0.2, [100 * v for v in ens], 0.4, label=f"ensemble of {m} (one value)")
    axes[2].set_xticks(xs, names)
    axes[2].set(ylabel="test error (%)", title="test-time averaging")
    axes[2].set_ylim(0, 1.3 * max(max(b[0] + b[1] for b in bars), 100 * max(ens)))  # room for the legend
    axes[2].legend(fontsize=8, loc="upper right")
    axes[2].grid(axis="y", alpha=0.3)
    return finish_figure(fig, suptitle=f"{m} ConvNets (dropout {config['dropout']}), "
                                       f"{config['n_train']} training digits, {results['n_test']} test digits; "
                                       f"mean +- sem over the members")


def replot(folder=None) -> Path:
    """Redraw ``ensembles_and_tta.png`` from a results folder's results.json, without training; the JSON is
    left untouched. ``folder``: default ``experiments/results/ensembles_and_tta``. Returns the PNG's path."""
    folder = Path(folder) if folder is not None else results_folder(__file__, "default", None)
    record = json.loads((folder / "results.json").read_text())
    fig = plot(record["results"], record["config"])
    path = folder / "ensembles_and_tta.png"
    fig.savefig(path, dpi=100)  # as write_results saves it
    plt.close(fig)
    return path


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
