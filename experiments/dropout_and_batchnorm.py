"""Dropout, batch norm, both, neither: does the pair really hurt, and only through the test-time variance shift?

Claim (course notes, 000_3cfbcdab51860f78.txt, Concept 6.51, and 001_f4e8d95f5b8d410b.txt): "BN seems to also
act as a regularizer, and for some reason subsumes [the] effect [of] Dropout. (Using dropout together with BN
seems to worsen performance.)" The notes put dropout in front of the classifier. The reason given by Li, Chen,
Hu & Yang (CVPR 2019), cited there, is the VARIANCE SHIFT of dropout placed IN FRONT OF a BN layer: inverted
dropout keeps a unit's mean but multiplies its second moment by 1 / (1 - p) in training, so BN's running
statistics describe inputs that are wider than the ones it sees at test time, without dropout.

Setup: ``experiments._nets.ConvNet`` (one plain conv block per stage, ReLU, He-normal init), six variants that
differ only in ``norm`` (None / "batch") and the dropout (rate p):
  - ``neither``, ``bn``: no dropout;
  - ``dropout_head``, ``bn_dropout_head``: one dropout, before the classifier (where the notes put it; no BN
    behind it);
  - ``dropout_li``, ``bn_dropout_li``: Li et al.'s placement, a dropout after every block's activation and
    before the head, so the BNs of the second and third stages (the 3rd and 4th BN layers) have a dropout in
    front of them and the first two (stem, first stage) do not: a built-in control.
A small stratified training subset of the MNIST sample (so that regularization matters), the 1,000 held-out
digits for validation. Adam with the learning rate cosine-annealed to 0. Protocol (``experiments/_protocol``):
the seeds ``_protocol.SEEDS`` for every variant, so seed s gives every variant the same initial conv and dense
weights and the same batches (each architecture trains as one population, ``fit(seeds=, hparams=
{"dropout_rate": ...})``). Every BN variant is evaluated twice after training: with its running averages
(PyTorch's default; with the rate annealed to 0 the last epochs barely move the weights, so the running
averages have settled on the training-mode statistics, variance shift included) and with population
statistics recomputed in evaluation mode (``train.recompute_batch_stats``: no dropout, hence no variance
shift). Claims (a) and (c) use the running averages (the default a user gets), claim (b) the recomputed ones.

Measured per variant and seed: the last epoch's training loss and error as the batches ran (training mode,
with dropout: how fast the training set is fit), the training and validation error in evaluation mode (with
each set of BN statistics) and their difference, the generalization gap; the variance shift ``running var /
recomputed var`` per BN layer (mean over channels).

Claims judged by ``_protocol.verdict`` (paired differences over the seeds, 95% interval, min_effect = 1 point
of validation error, the size of a "worse performance" worth a sentence in the notes):
  (a) BN + dropout (Li placement) has a higher validation error than BN alone, with running statistics;
  (b) the same claim with recomputed statistics (the harm should disappear: not reproduced or partly), and the
      mechanism: recomputing lowers BN + dropout's error by more than BN's (difference of differences);
  (c) dropout before the classifier does not hurt BN: the opposite claim "BN + dropout before the classifier
      has a higher validation error than BN" judged by the rule; (c) holds when that is not reproduced and
      its 95% interval stays below min_effect.

Run: python -m experiments.dropout_and_batchnorm  ->  experiments/results/dropout_and_batchnorm/
Result (default config: 500 training digits, widths 8/16/32, dropout 0.3, 20 epochs = 400 Adam steps, the rate
cosine-annealed from 1e-2 to 0, seeds 0-4; 481 s wall on the 2-core CPU shared with other jobs, load average
9.6 before and 11.5 after). Final validation error, mean +- standard error over the 5 seeds, running BN
statistics: neither 13.3 +- 2.7%, dropout before the classifier 16.6 +- 2.2%, dropout in Li's placement
19.3 +- 3.3%, BN 8.0 +- 0.1%, BN + dropout before the classifier 8.8 +- 0.7%, BN + dropout in Li's placement
46.4 +- 7.7% (17.8 to 63.1% per seed). With recomputed statistics: BN 8.1 +- 0.2%, BN + dropout before the
classifier 8.7 +- 0.6%, BN + Li dropout 9.0 +- 0.3%. Claims (paired differences b - a of validation error,
min_effect 1 point):
  (a) BN + Li dropout worse than BN, running statistics: +38.38 +- 7.79 points (95% interval 16.77 to 59.99):
      reproduced.
  (b) the same with recomputed statistics: +0.88 +- 0.24 points (0.21 to 1.55): partly (a harm remains, at
      95%, but below 1 point); recomputing lowers the pair's error by 37.50 +- 7.90 points more than BN's
      (15.56 to 59.44): reproduced. The pair hurts almost only through its test-time statistics.
  (c) BN + dropout before the classifier worse than BN (running): +0.78 +- 0.60 points (-0.88 to 2.44):
      partly, as a harm claim; no harm is detected, but one of up to 2.4 points is not excluded, so "does not
      hurt" is not shown at the 1-point level either.
Variance shift (running / recomputed variance): 1.73 +- 0.02 and 1.66 +- 0.03 at the two BN layers behind a
dropout (Li placement), 1.00 +- 0.00 at the two without, and 0.99-1.00 at every layer of BN and BN + dropout
before the classifier. Training speed against generalization: last-epoch training loss (training mode) BN
0.066 +- 0.006, BN + head dropout 0.322 +- 0.008, BN + Li dropout 0.583 +- 0.018; with recomputed statistics
their training error is 0.0 +- 0.0, 1.0 +- 0.2 and 3.9 +- 0.4% and the gap (validation - training error)
8.1 +- 0.2, 7.7 +- 0.7 and 5.1 +- 0.4 points: dropout narrows the gap by fitting the training set less, not by
lowering the validation error. With running statistics the pair misclassifies its own training digits too
(42.0 +- 8.4%). Without BN the nets train more slowly (training loss: neither 0.231 +- 0.072, dropout before the
classifier 0.663 +- 0.068, Li placement 0.876 +- 0.096) and dropout does not lower their error (above).
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, init, train

# name: (norm, dropout placement, dropout on). Variants with the same (norm, placement) train as one population.
VARIANTS = {"neither": (None, "blocks", False), "dropout_head": (None, "head", True),
            "dropout_li": (None, "blocks", True), "bn": ("batch", "blocks", False),
            "bn_dropout_head": ("batch", "head", True), "bn_dropout_li": ("batch", "blocks", True)}
CONFIG = dict(
    preset="default", dataset="mnist_sample", data_root="data", seeds=protocol.SEEDS, n_train=500, n_val=1000,
    widths=(8, 16, 32), blocks_per_stage=1, kernel_init="he_normal", dropout=0.3, variants=list(VARIANTS),
    optimizer="adam", lr=1e-2, schedule="cosine to 0", epochs=20, batch_size=25, min_effect=0.01,
    evaluation="running averages (claims a, c) and statistics recomputed after training (claim b)",
)
# --full: CIFAR-10 (place it under data_root/cifar10/, see jaxnets.data.load_cifar10), all 50,000 training
# images, the 10,000 test images as validation, a wider and deeper net.
FULL_CONFIG = dict(CONFIG, preset="full", dataset="cifar10", n_train=None, n_val=None, widths=(64, 128, 256),
                   blocks_per_stage=2, epochs=40, batch_size=128)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=100, n_val=50, widths=(4, 8, 8), epochs=1,
                   batch_size=25, variants=["bn", "bn_dropout_li"])

EVAL_TX = optax.identity()
# The claims: (name, variant a, variant b, which statistics); each is "b has a higher validation error than a".
CLAIMS = (("a_li_hurts_bn_running", "bn", "bn_dropout_li", "running"),
          ("b_li_hurts_bn_recomputed", "bn", "bn_dropout_li", "recomputed"),
          ("c_head_dropout_hurts_bn_running", "bn", "bn_dropout_head", "running"))


def load(config: dict):
    if config["dataset"] == "cifar10":  # raises FileNotFoundError (saying where to put it) when absent
        return data.load_cifar10(config["data_root"])
    return mnist_splits(config["n_train"], config["n_val"], seed=0)


def variance_shift(state: train.TrainState, recomputed: train.TrainState) -> list[float]:
    """Per BN layer (in parameter order): running variance / evaluation-mode variance, mean over channels."""
    names = sorted(state.batch_stats, key=lambda n: int(n.split("_")[-1]))
    return [float(np.mean(np.asarray(state.batch_stats[n]["var"]) / np.asarray(recomputed.batch_stats[n]["var"])))
            for n in names]


def errors(state: train.TrainState, train_set: dict, val_set: dict) -> dict:
    """Evaluation-mode error on both sets and the generalization gap (validation - training)."""
    tr, va = (1 - train.evaluate(state, s, batch_size=500)["accuracy"] for s in (train_set, val_set))
    return {"train_error": tr, "val_error": va, "gap": va - tr}


def train_population(norm, placement, names, config, train_set, val_set) -> dict:
    """One architecture, its variants (dropout off / on) x the seeds as one population; per variant the rows."""
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"], norm=norm,
                    dropout=config["dropout"], dropout_at=placement,
                    kernel_init=getattr(init, config["kernel_init"])())
    rates = [config["dropout"] if VARIANTS[n][2] else 0.0 for n in names]
    steps = len(train_set["label"]) // config["batch_size"] * config["epochs"]
    tx = train.optimizer(config["optimizer"], learning_rate=train.schedules.cosine(config["lr"], steps))
    seeds = list(config["seeds"])
    started = time.perf_counter()
    # No per-epoch validation: the final states are evaluated below, and per-epoch evaluation would cost
    # almost half as much as the training itself.
    state, history = train.fit(model, train_set, epochs=config["epochs"], batch_size=config["batch_size"],
                               optimizer=tx, seeds=seeds, hparams={"dropout_rate": rates}, progress=False)
    rows = {n: [] for n in names}
    for r, member in enumerate(history.runs):
        name = names[r // len(seeds)]  # member r = grid point * len(seeds) + seed index
        # Evaluation ignores the optimizer, but its compiled step is keyed on the state's static `tx`: one
        # placeholder for every member compiles it once per architecture instead of once per member.
        # (`model.apply` for every member: evaluation mode has no dropout, so its rate changes nothing there.)
        one = train.unstack(state, r).replace(opt_state=(), tx=EVAL_TX, apply_fn=model.apply)
        row = {"seed": member["seed"], "train_loss_curve": [e[r] for e in history.train_loss],
               "train_error_curve": [e[r] for e in history.train_error],
               "running": errors(one, train_set, val_set)}
        if norm == "batch":
            recomputed = train.recompute_batch_stats(one, train_set)
            row["recomputed"] = errors(recomputed, train_set, val_set)
            row["variance_shift"] = variance_shift(one, recomputed)
        rows[name].append(row)
        print(f"{name:16s} seed {row['seed']}: train loss {row['train_loss_curve'][-1]:.3f}, val err running "
              f"{row['running']['val_error']:.3f}, recomputed {row.get('recomputed', {}).get('val_error', np.nan):.3f}"
              f", var shift {np.round(row.get('variance_shift', []), 2)}", flush=True)
    print(f"  ({norm}, {placement}): {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    """mean +- sem (``protocol.estimate``) of every final number of one variant, over its seeds."""
    out = {"train_loss_last_epoch": protocol.estimate([r["train_loss_curve"][-1] for r in rows]),
           "train_error_last_epoch": protocol.estimate([r["train_error_curve"][-1] for r in rows])}
    for stats in ("running", "recomputed"):
        if stats in rows[0]:
            out[stats] = {k: protocol.estimate([r[stats][k] for r in rows]) for k in rows[0][stats]}
    if "variance_shift" in rows[0]:
        shifts = np.asarray([r["variance_shift"] for r in rows])
        out["variance_shift"] = [protocol.estimate(shifts[:, k]) for k in range(shifts.shape[1])]
    return out


def judge(runs: dict, config: dict) -> dict:
    """Every claim whose variants ran: the paired difference (b - a) of validation error, min_effect, verdict."""
    claims = {}
    for name, a, b, stats in CLAIMS:
        if a in runs and b in runs:
            d = protocol.paired([r[stats]["val_error"] for r in runs[a]], [r[stats]["val_error"] for r in runs[b]])
            claims[name] = {"claim": f"{b} has a higher validation error than {a} ({stats} BN statistics)",
                            "a": a, "b": b, "statistics": stats, "paired_difference": d, "direction": "higher",
                            "min_effect": config["min_effect"],
                            "verdict": protocol.verdict(d, direction="higher", min_effect=config["min_effect"])}
    if "c_head_dropout_hurts_bn_running" in claims:  # (c) is the absence of that harm
        c = claims["c_head_dropout_hurts_bn_running"]
        c["no_harm_of_min_effect"] = (c["verdict"] != "reproduced"
                                      and c["paired_difference"]["ci95"][1] < config["min_effect"])
    if "bn" in runs and "bn_dropout_li" in runs:  # (b) mechanism: recomputing helps the pair more than BN
        gain = {n: [r["running"]["val_error"] - r["recomputed"]["val_error"] for r in runs[n]]
                for n in ("bn", "bn_dropout_li")}
        d = protocol.paired(gain["bn"], gain["bn_dropout_li"])
        claims["b_recomputing_helps_li_more"] = {
            "claim": "recomputing the BN statistics lowers bn_dropout_li's validation error by more than bn's",
            "a": "bn (running - recomputed)", "b": "bn_dropout_li (running - recomputed)", "paired_difference": d,
            "direction": "higher", "min_effect": config["min_effect"],
            "verdict": protocol.verdict(d, direction="higher", min_effect=config["min_effect"])}
    return claims


def main(config=CONFIG, *, out=None):
    """Train the variants for every seed; running vs recomputed BN statistics; the claims' verdicts."""
    started = time.perf_counter()
    load_before = machine_load()
    train_set, val_set = load(config)
    groups = {}
    for name in config["variants"]:
        groups.setdefault(VARIANTS[name][:2], []).append(name)
    runs = {}
    for (norm, placement), names in groups.items():
        runs.update(train_population(norm, placement, names, config, train_set, val_set))
    runs = {name: runs[name] for name in config["variants"]}
    summary = {name: summarize(rows) for name, rows in runs.items()}
    claims = judge(runs, config)
    for name, c in claims.items():
        print(f"{name}: {protocol.describe(c['paired_difference'], scale=100, unit=' points')} "
              f"(95% CI {100 * c['paired_difference']['ci95'][0]:.1f}, {100 * c['paired_difference']['ci95'][1]:.1f})"
              f" -> {c['verdict']}")
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]),
               "steps": len(train_set["label"]) // config["batch_size"] * config["epochs"],
               "machine_load_before": load_before, "machine_load_after": machine_load(),
               "summary": summary, "claims": claims, "runs": runs}
    return write_results(__file__, config, results, figures={"dropout_and_batchnorm": plot(runs, summary, claims,
                                                                                           config)},
                         out=out, started=started)


def plot(runs: dict, summary: dict, claims: dict, config: dict):
    fig, (ax_loss, ax_val, ax_claim, ax_shift) = plt.subplots(1, 4, figsize=(21, 5))
    names = list(runs)
    colors = dict(zip(VARIANTS, ("C7", "C1", "C3", "C0", "C2", "C4")))
    epochs = np.arange(1, config["epochs"] + 1)
    for name, rows in runs.items():
        protocol.band(ax_loss, epochs, [r["train_loss_curve"] for r in rows], label=name, color=colors[name])
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss (training mode, as the batches ran)",
                title="how fast the training set is fit")
    x = np.arange(len(names))
    for k, (stats, offset, hatch) in enumerate((("running", -0.2, None), ("recomputed", 0.2, "//"))):
        means = [100 * summary[n][stats]["val_error"]["mean"] if stats in summary[n] else np.nan for n in names]
        sems = [100 * summary[n][stats]["val_error"]["sem"] if stats in summary[n] else np.nan for n in names]
        ax_val.bar(x + offset, means, 0.4, yerr=sems, capsize=3, color=[colors[n] for n in names], hatch=hatch,
                   alpha=0.8 if k == 0 else 0.45, label=f"{stats} BN statistics")
        for i, n in enumerate(names):
            if stats in runs[n][0]:
                ax_val.plot([i + offset] * len(runs[n]), [100 * r[stats]["val_error"] for r in runs[n]], "k.", ms=4)
    ax_val.set(xticks=x, ylim=(0, None), ylabel="final validation error (%)",
               title=f"mean +- sem over {len(config['seeds'])} seeds (dots: seeds)")
    ax_val.set_xticklabels(names, rotation=30, ha="right")
    labels = list(claims)
    d = [claims[c]["paired_difference"] for c in labels]
    y = np.arange(len(labels))
    ax_claim.errorbar([100 * e["mean"] for e in d], y, fmt="o", capsize=4,
                      xerr=np.abs(np.array([[100 * e["ci95"][0] for e in d], [100 * e["ci95"][1] for e in d]])
                                  - [100 * e["mean"] for e in d]))
    for i, e in enumerate(d):  # the numbers too: a 1-point interval is invisible next to a 40-point one
        ax_claim.annotate(f"{100 * e['mean']:.2f} [{100 * e['ci95'][0]:.2f}, {100 * e['ci95'][1]:.2f}]",
                          (100 * e["ci95"][1], i), textcoords="offset points", xytext=(6, 0), va="center", fontsize=8)
    ax_claim.axvline(0, color="k", lw=1)
    ax_claim.axvline(100 * config["min_effect"], color="k", ls="--", lw=1, label="min_effect")
    ax_claim.set(yticks=y, xlabel="paired difference b - a (points of validation error), 95% interval",
                 title="claims (b - a > 0: b worse)")
    ax_claim.set_yticklabels([f"{c.replace('_', ' ')}\n{claims[c]['verdict']}" for c in labels], fontsize=8)
    for name in names:
        if "variance_shift" in summary[name]:
            shift = summary[name]["variance_shift"]
            ax_shift.errorbar(np.arange(1, len(shift) + 1), [s["mean"] for s in shift], [s["sem"] for s in shift],
                              fmt="o-", capsize=3, color=colors[name], label=name)
    ax_shift.axhline(1 / (1 - config["dropout"]), color="k", ls=":", lw=1, label="1 / (1 - p)")
    ax_shift.set(xlabel="BN layer (1, 2: no dropout in front in any variant)", ylabel="running var / recomputed var",
                 title="variance shift per BN layer", ylim=(0, None),
                 xticks=np.arange(1, 2 + len(config["widths"]) * config["blocks_per_stage"]))
    return finish_figure(fig, (ax_loss, ax_val, ax_claim, ax_shift), legend={"fontsize": 8},
                         suptitle=f"dropout p = {config['dropout']}, {config['n_train']} training digits, "
                                  f"{config['epochs']} epochs, Adam cosine to 0")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
