"""Tests of jaxnets/train/history.py: History JSON, EarlyStopping, BestMetric, the atomic writer, plot_history,
and a population's History (member, summary, paired, from_members, its JSON and plot)."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from jaxnets.train.history import (BestMetric, EarlyStopping, History, plot_history, remove_stale_temporaries,
                                   write_atomic, write_text_atomic)


def test_history_json_round_trip_with_non_finite_values():
    history = History(train_loss=[1.0, math.inf], train_error=[0.5, 0.25], val_loss=[math.nan, 2.0],
                      val_error=[0.1, 0.2], wall_time=[1.0, 2.0], images_per_sec=[3.0, 4.0], best_epoch=2)
    text = history.to_json()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text)["val_loss"] == [None, 2.0]
    back = History.from_json(text)
    assert back.train_loss[1] != back.train_loss[1] and math.isnan(back.val_loss[0])  # non-finite -> nan
    assert back.val_error == history.val_error and back.best_epoch == 2 and back.learning_rate == []


def test_history_from_dict_rejects_other_fields():
    with pytest.raises(ValueError, match=r"History.from_dict: expected the fields \[.*\], got \['train_loss'\]"):
        History.from_dict({"train_loss": []})


def test_early_stopping_errors():
    with pytest.raises(ValueError, match="EarlyStopping: patience must be an int >= 1, got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(TypeError, match="EarlyStopping: patience must be an int >= 1, got bool True"):
        EarlyStopping(patience=True)
    with pytest.raises(ValueError, match="EarlyStopping: unknown monitor 'accuracy'; expected one of"):
        EarlyStopping(monitor="accuracy")
    with pytest.raises(ValueError, match="EarlyStopping: min_delta must be a finite real number >= 0.0, got -0.1"):
        EarlyStopping(min_delta=-0.1)
    with pytest.raises(TypeError, match="EarlyStopping: min_delta must be a real number >= 0.0, got str '0.1'"):
        EarlyStopping(min_delta="0.1")


def test_best_metric_improvement_rule_and_round_trip():
    best = BestMetric(min_delta=0.1)
    assert not best.update(math.nan, 1)  # a non-finite value never improves
    assert best.update(1.0, 2) and (best.value, best.epoch, best.rank, best.bad_epochs) == (1.0, 2, 1, 0)
    assert not best.update(0.95, 3)  # not by more than min_delta
    assert best.update(0.85, 4) and (best.epoch, best.rank, best.bad_epochs) == (4, 2, 0)
    assert not best.update(2.0, 5) and best.bad_epochs == 1
    again = BestMetric(min_delta=0.1)
    again.load(json.loads(json.dumps(best.to_dict())))
    assert again.to_dict() == best.to_dict()


# ---- the atomic writer ----

def _dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_write_text_atomic_writes_and_replaces(tmp_path):
    path = tmp_path / "history.json"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two" and os.listdir(tmp_path) == ["history.json"]


def test_write_atomic_leaves_nothing_behind_on_an_exception(tmp_path):
    path = tmp_path / "curves.png"
    write_text_atomic(path, "old")

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half of it")
        raise KeyboardInterrupt  # also an interruption that is not an Exception

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, failing)
    assert os.listdir(tmp_path) == ["curves.png"] and path.read_text() == "old"  # the old file, whole


def test_a_later_write_removes_stale_temporaries_of_its_target(tmp_path):
    path = tmp_path / "history.json"
    dead, alive = _dead_pid(), os.getppid()
    stale = [tmp_path / f"history.json.tmp-{dead}.json", tmp_path / f"history.json.tmp-{dead}"]
    kept = [tmp_path / f"history.json.tmp-{alive}.json",  # a live process's write in progress
            tmp_path / f"curves.png.tmp-{dead}.png",       # another target's
            tmp_path / "history.json.tmp-notapid"]
    for p in stale + kept:
        p.write_text("partial")
    write_text_atomic(path, "new")
    assert sorted(os.listdir(tmp_path)) == sorted(["history.json"] + [p.name for p in kept])
    assert path.read_text() == "new"
    assert remove_stale_temporaries(path) == []


def test_plot_history_writes_a_png_atomically(tmp_path):
    history = History(train_loss=[1.0, 0.5], train_error=[0.5, 0.25], val_loss=[1.1, 0.6], val_error=[0.6, 0.3],
                      best_epoch=2)
    path = tmp_path / "curves.png"
    (tmp_path / f"curves.png.tmp-{_dead_pid()}.png").write_bytes(b"partial")
    plot_history(history, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["curves.png"]


# ---- a population (fit with seeds= / hparams=) ----
NAN = math.nan


def _population() -> History:
    """2 learning rates x 3 seeds, 3 epochs: member 2 (lr 0.01, seed 2) diverged in epoch 2; member 5 (lr 0.1,
    seed 2) stopped early after epoch 2."""
    runs = [{"seed": s, "learning_rate": lr} for lr in (0.01, 0.1) for s in (0, 1, 2)]
    val_error = [[0.50, 0.52, 0.55, 0.40, 0.42, 0.41],
                 [0.30, 0.33, NAN, 0.20, 0.24, 0.22],
                 [0.25, 0.27, NAN, 0.10, 0.12, NAN]]
    train_loss = [[2.0, 2.1, 2.2, 1.5, 1.6, 1.55],
                  [1.0, 1.1, NAN, 0.8, 0.9, 0.85],
                  [0.9, 0.95, NAN, 0.5, 0.6, NAN]]
    return History(train_loss=train_loss, train_error=[[v / 4 for v in row] for row in train_loss],
                   val_loss=[[2 * v for v in row] for row in val_error], val_error=val_error,
                   learning_rate=[[0.01] * 3 + [0.1] * 3] * 3, images_per_sec=[600.0, 900.0, 800.0],
                   wall_time=[1.5, 2.5, 3.5], best_epoch=[3, 3, 1, 3, 3, 2],
                   stopped_early=[False] * 5 + [True], runs=runs,
                   diverged=[None, None, {"step": 7, "epoch": 2}, None, None, None])


def test_population_json_round_trip_is_strict_and_nested():
    history = _population()
    text = history.to_json()
    data = json.loads(text)
    assert "NaN" not in text and data["val_error"][1] == [0.3, 0.33, None, 0.2, 0.24, 0.22]
    assert data["runs"][3] == {"seed": 0, "learning_rate": 0.1} and isinstance(data["runs"][3]["seed"], int)
    assert data["diverged"][2] == {"step": 7, "epoch": 2} and data["best_epoch"] == [3, 3, 1, 3, 3, 2]
    assert data["images_per_sec"] == [600.0, 900.0, 800.0]  # one float per epoch
    back = History.from_json(text)
    assert math.isnan(back.val_error[2][5]) and back.val_error[2][3] == 0.10
    assert back.to_dict() == data and back.runs == history.runs and back.stopped_early == history.stopped_early
    assert back.is_population and not History().is_population


def test_single_run_json_is_unchanged_and_old_files_load():
    single = History(train_loss=[1.0], train_error=[0.5], best_epoch=1)
    assert set(single.to_dict()) == {"train_loss", "train_error", "val_loss", "val_error", "learning_rate",
                                     "images_per_sec", "wall_time", "best_epoch", "stopped_early"}
    old = single.to_dict()  # a history.json written before populations existed
    assert History.from_dict(old) == single
    assert History.from_dict({**old, "runs": None, "diverged": None}) == single  # null keys read as a single run


def test_population_from_dict_rejects_a_row_of_the_wrong_length():
    data = _population().to_dict()
    data["val_loss"][1] = data["val_loss"][1][:5]
    with pytest.raises(ValueError, match=r"History.from_dict: val_loss\[1\] holds 5 values, expected one per "
                                         r"member \(6, the length of runs\)"):
        History.from_dict(data)
    data = _population().to_dict()
    data["best_epoch"] = [1, 2]
    with pytest.raises(ValueError, match=r"History.from_dict: best_epoch must be a list of 6 entries"):
        History.from_dict(data)


def test_member_is_a_single_run_history_of_the_epochs_it_completed():
    history = _population()
    m = history.member(4)
    assert m.runs is None and len(m) == 3 and m.val_error == [0.42, 0.24, 0.12] and m.best_epoch == 3
    assert m.learning_rate == [0.1] * 3 and m.wall_time == [1.5, 2.5, 3.5] and m.stopped_early is False
    stopped = history.member(5)
    assert len(stopped) == 2 and stopped.train_loss == [1.55, 0.85] and stopped.stopped_early is True
    diverged = history.member(2)  # diverged in epoch 2: epoch 1 only, as NonFiniteLossError.history
    assert diverged.val_error == [0.55] and diverged.best_epoch == 1
    assert History.from_json(m.to_json()) == m


def test_member_errors():
    with pytest.raises(ValueError, match=r"History.member: r must be an int in \[0, 5\], got 6"):
        _population().member(6)
    with pytest.raises(TypeError, match=r"History.member: r must be an int in \[0, 5\], got bool True"):
        _population().member(True)
    with pytest.raises(ValueError, match=r"History.member: this History is a single run \(runs is None\); "
                                         r"member\(\) needs the History of a population"):
        History(train_loss=[1.0]).member(0)


def test_summary_per_grid_point_against_numpy_and_scipy():
    from scipy import stats as scipy_stats
    import numpy as np

    history = _population()
    assert history.grid == [{"learning_rate": 0.01}, {"learning_rate": 0.1}]
    low, high = history.summary()  # val_error at each member's last completed epoch
    assert low.hparams == {"learning_rate": 0.01} and low.seeds == (0, 1, 2) and low.index == 0
    assert low.values[:2] == (0.25, 0.27) and math.isnan(low.values[2])  # the diverged member left out ...
    assert (low.n, low.n_diverged) == (2, 1)                             # ... and counted
    finals = [0.10, 0.12, 0.22]  # member 5 stopped after epoch 2: its last value counts
    assert high.values == tuple(finals) and (high.n, high.n_diverged) == (3, 0)
    assert high.mean == pytest.approx(np.mean(finals), rel=1e-14)
    assert high.std == pytest.approx(np.std(finals, ddof=1), rel=1e-13)
    assert high.sem == pytest.approx(scipy_stats.sem(finals), rel=1e-13)
    expected = scipy_stats.t.interval(0.95, 2, loc=np.mean(finals), scale=scipy_stats.sem(finals))
    assert high.ci95 == pytest.approx(expected, rel=1e-10)
    best = history.summary(metric="val_loss", at="best")  # best epochs [3, 3, 1 (diverged), 3, 3, 2]
    assert best.metric == "val_loss" and best.at == "best"
    assert best[1].values == pytest.approx((0.2, 0.24, 0.44)) and best[0].n == 2


def test_summary_of_one_seed_has_nan_spread():
    history = History(train_loss=[[1.0, 2.0]], train_error=[[0.1, 0.2]], images_per_sec=[1.0], wall_time=[1.0],
                      best_epoch=[1, 1], stopped_early=[False, False],
                      runs=[{"seed": 0, "weight_decay": 0.0}, {"seed": 0, "weight_decay": 5e-4}])
    first, second = history.summary(metric="train_loss")
    assert (first.n, first.mean, second.mean) == (1, 1.0, 2.0)
    assert math.isnan(first.sem) and math.isnan(first.std) and all(math.isnan(v) for v in first.ci95)
    assert str(history.summary(metric="train_loss")).splitlines()[2:] == [
        "0             1  1.0000      -              0",
        "0.0005        1  2.0000      -              0"]


def test_summary_table_is_mean_plus_minus_sem_per_grid_point():
    table = str(_population().summary())
    assert table.splitlines() == [
        "val_error (%) at the final epoch over seeds: mean +- standard error, 95% CI (Student t)",
        "learning_rate  n  val_error (%)  95% CI          diverged",
        "0.01           2  26.00 +- 1.00  [13.29, 38.71]         1",
        "0.1            3  14.67 +- 3.71  [-1.30, 30.64]         0"]
    assert str(_population().summary()[1]).splitlines()[2] == table.splitlines()[3]


def test_summary_errors():
    history = _population()
    with pytest.raises(ValueError, match=r"History.summary: unknown metric 'accuracy'; expected one of"):
        history.summary(metric="accuracy")
    with pytest.raises(ValueError, match=r"History.summary: unknown at 'last'; expected one of \('final', 'best'\)"):
        history.summary(at="last")
    with pytest.raises(ValueError, match=r"History.summary: this History is a single run \(runs is None\); "
                                         r"summary\(\) needs"):
        History(train_loss=[1.0]).summary()
    no_val = dataclasses.replace(history, val_loss=[], val_error=[])
    with pytest.raises(ValueError, match=r"History.summary: the history holds no 'val_error' values"):
        no_val.summary()


def test_paired_differences_by_seed():
    import numpy as np

    history = _population()
    d = history.paired(0, 1)  # b - a per seed; seed 2 of grid point 0 diverged: seeds 0 and 1 only
    assert d.seeds == (0, 1) and d.differences == pytest.approx((0.10 - 0.25, 0.12 - 0.27))
    assert d.mean == pytest.approx(-0.15) and d.sem == pytest.approx(0.0, abs=1e-15) and d.n == 2
    same = history.paired({"learning_rate": 0.01}, {"learning_rate": 0.1}, metric="train_loss", at="best")
    diffs = [b - a for a, b in zip((0.9, 0.95), (0.5, 0.6))]  # best epochs: 3 for seeds 0 and 1 of both
    assert same.differences == pytest.approx(tuple(diffs)) and same.std == pytest.approx(np.std(diffs, ddof=1))
    assert same.a == {"learning_rate": 0.01} and same.b == {"learning_rate": 0.1}
    assert str(d) == ("val_error (%) at the final epoch, (learning_rate=0.1) - (learning_rate=0.01) over 2 paired "
                      "seeds: -15.00 +- 0.00, 95% CI [-15.00, -15.00]")


def test_paired_errors():
    history = _population()
    with pytest.raises(ValueError, match=r"History.paired: b=\{'learning_rate': 0.3\} matches no grid point; the "
                                         r"grid points are \[\{'learning_rate': 0.01\}, \{'learning_rate': 0.1\}\]"):
        history.paired(0, {"learning_rate": 0.3})
    with pytest.raises(ValueError, match=r"History.paired: a names \['momentum'\], which are not hyperparameters"):
        history.paired({"momentum": 0.9}, 1)
    with pytest.raises(ValueError, match=r"History.paired: a must be an int in \[0, 1\], got 2"):
        history.paired(2, 1)
    with pytest.raises(TypeError, match=r"History.paired: b must be a grid index \(int\) or a dict of "
                                        r"hyperparameter values, got str 'lr=0.1'"):
        history.paired(0, "lr=0.1")
    with pytest.raises(TypeError, match=r"History.paired: a must be a grid index \(int\) or a dict of "
                                        r"hyperparameter values, got bool False"):
        history.paired(False, 1)
    with pytest.raises(ValueError, match=r"History.paired: this History is a single run"):
        History(train_loss=[1.0]).paired(0, 1)
    grid = History(train_loss=[[1.0] * 4], train_error=[[0.1] * 4], images_per_sec=[1.0], wall_time=[1.0],
                   best_epoch=[1] * 4, stopped_early=[False] * 4,
                   runs=[{"seed": 0, "lr": lr, "wd": wd} for lr in (0.1, 0.2) for wd in (0.0, 0.1)])
    with pytest.raises(ValueError, match=r"History.paired: a=\{'lr': 0.1\} matches 2 grid points \(\[0, 1\]\)"):
        grid.paired({"lr": 0.1}, 3, metric="train_loss")
    assert grid.paired({"lr": 0.1, "wd": 0.1}, {"lr": 0.2, "wd": 0.1}, metric="train_loss").n == 1


def test_from_members_builds_a_population_from_a_loop():
    a = History(train_loss=[1.0, 0.5], train_error=[0.5, 0.2], images_per_sec=[100.0, 300.0], wall_time=[1.0, 2.0],
                best_epoch=2)
    b = History(train_loss=[2.0], train_error=[0.6], images_per_sec=[100.0], wall_time=[4.0], best_epoch=1)
    history = History.from_members([a, b], [{"seed": 0, "learning_rate": 0.1}, {"seed": 1, "learning_rate": 0.1}],
                                   diverged=[None, {"step": 12, "epoch": 2}])
    assert history.train_loss[0] == [1.0, 2.0] and history.train_loss[1][0] == 0.5
    assert math.isnan(history.train_loss[1][1]) and history.val_loss == []
    assert history.images_per_sec == [2 / (1 / 100 + 1 / 100), 300.0]  # one member after the other
    assert history.wall_time == [5.0, 6.0] and history.best_epoch == [2, 1] and history.stopped_early == [False] * 2
    assert history.member(0) == dataclasses.replace(a, images_per_sec=[100.0, 300.0], wall_time=[5.0, 6.0])
    assert history.summary(metric="train_loss")[0].n_diverged == 1
    seeds_only = History.from_members([History(train_loss=[1.0], train_error=[0.5]),
                                       History(train_loss=[3.0], train_error=[0.7])], [{"seed": 0}, {"seed": 1}])
    assert seeds_only.images_per_sec == [] and seeds_only.grid == [{}]
    assert str(seeds_only.summary(metric="train_loss")).splitlines()[1:] == [
        "n  train_loss        95% CI               diverged", "2  2.0000 +- 1.0000  [-10.7062, 14.7062]         0"]
    with pytest.raises(ValueError, match=r"History.from_members: expected R >= 1 members with R runs"):
        History.from_members([a], [])
    with pytest.raises(ValueError, match=r"History.from_members: every run must be a dict with an int 'seed'"):
        History.from_members([a, b], [{"seed": 0}, {"seed": 1.0}])
    with pytest.raises(ValueError, match=r"History.from_members: some members recorded val_loss and others did not"):
        History.from_members([a, dataclasses.replace(b, val_loss=[1.0], val_error=[0.1])],
                             [{"seed": 0}, {"seed": 1}])


def test_plot_history_of_a_population(tmp_path):
    from jaxnets.train.history import write_logs

    history = _population()
    write_logs(str(tmp_path), history)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert History.from_json((tmp_path / "history.json").read_text()).to_dict() == history.to_dict()
    no_val = dataclasses.replace(history, val_loss=[], val_error=[])  # the band then goes around the train curve
    plot_history(no_val, tmp_path / "train.png")
    assert (tmp_path / "train.png").stat().st_size > 1000


def test_non_finite_loss_error_carries_the_history():
    from jaxnets.train.history import NonFiniteLossError

    history = History(train_loss=[1.0], train_error=[0.5])
    error = NonFiniteLossError("fit: ...", step=3, epoch=2, batch=1, checkpoint=None, history=history)
    assert error.history is history and error.step == 3
    assert NonFiniteLossError("x", step=0, epoch=1, batch=1, checkpoint=None).history is None
