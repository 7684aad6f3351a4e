"""Tests of jaxnets/train/history.py: History JSON, EarlyStopping, BestMetric, the atomic writer, plot_history."""
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
