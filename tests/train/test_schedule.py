"""train.schedule."""

from __future__ import annotations

import math

import pytest

from train.schedule import make_schedule


def test_onecycle():
    f = make_schedule("onecycle", 0.1, 100, warmup=0.2)
    assert math.isclose(f(0), 0.1 / 25)
    assert math.isclose(f(20), 0.1)
    assert f(10) < f(19) < f(20) and f(21) < f(20)
    assert math.isclose(f(100), 0.1 / 1e4) and f(99) < 0.001


def test_cosine_step_constant():
    f = make_schedule("cosine", 1.0, 10, warmup=0.0)
    assert math.isclose(f(0), 1.0) and math.isclose(f(5), 0.5, abs_tol=1e-9) and f(10) < 1e-12
    g = make_schedule("step", 1.0, 100)
    assert (g(49), g(50), g(74), g(75)) == (1.0, 0.1, 0.1, pytest.approx(0.01))
    assert make_schedule("constant", 0.3, 5)(4) == 0.3
    with pytest.raises(ValueError, match="onecycle"):
        make_schedule("linear", 1.0, 10)
