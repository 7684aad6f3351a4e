"""Tests of jaxnets/train/progress.py: the single run's bar and the population's (best, median, worst member)."""
import io
import math

import numpy as np

from jaxnets.train.progress import ProgressBar, population_postfix, progress_enabled


def test_population_postfix_names_best_median_and_worst_member():
    loss = [0.30, 0.10, math.nan, 0.20, 0.40]
    accuracy = [0.90, 0.97, 0.0, 0.95, 0.80]
    text = population_postfix(np.asarray(loss), accuracy, 12345.6)
    # 4 finite members sorted by loss: 0.10, 0.20, 0.30, 0.40; the median member is the lower middle one
    assert text == "best 0.1000 (97.0%), median 0.2000 (95.0%), worst 0.4000 (80.0%) of 4, 1 diverged, 12346 img/s"
    assert population_postfix([0.5], [0.5], 10.0) == "best 0.5000 (50.0%), median 0.5000 (50.0%), worst 0.5000 (50.0%) of 1, 10 img/s"
    assert population_postfix([math.inf, math.nan], [0, 0], 0.0) == "no finite loss among 2 members, 2 diverged, 0 img/s"


def _bar_text(update) -> str:
    stream = io.StringIO()
    bar = ProgressBar(10, epoch=1, epochs=2, enabled=True, stream=stream)
    update(bar)
    bar.close()
    return stream.getvalue()


def test_progress_bar_shows_the_population_or_the_single_run():
    single = _bar_text(lambda bar: bar.update(5, loss=0.25, accuracy=0.9, images_per_sec=1000.0))
    assert "5/10" in single and "loss=0.2500, acc=90.00%, 1000 img/s" in single
    population = _bar_text(lambda bar: bar.update(7, loss=np.array([0.3, 0.1, 0.2]), accuracy=np.array([0.8, 0.9, 0.85]),
                                                 images_per_sec=3000.0))
    assert "7/10" in population
    assert "best 0.1000 (90.0%), median 0.2000 (85.0%), worst 0.3000 (80.0%) of 3, 3000 img/s" in population


def test_a_disabled_bar_draws_nothing():
    stream = io.StringIO()
    bar = ProgressBar(10, epoch=1, epochs=1, enabled=False, stream=stream)
    bar.update(3, loss=[0.1, 0.2], accuracy=[0.5, 0.5], images_per_sec=1.0)
    bar.close("val")
    assert stream.getvalue() == "" and not progress_enabled(True, stream)
