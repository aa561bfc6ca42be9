"""The shared argument checks: what each accepts, what it refuses, and the message it gives."""

import numpy as np
import pytest

from tf_fracture.validation import check_choice, check_int, check_number, check_rate


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [(1, {}, 1), (np.int64(7), {}, 7), (0, {"minimum": 0}, 0), (-3, {"minimum": None}, -3), (5, {"maximum": 5}, 5)],
)
def test_check_int_accepts_and_returns_a_python_int(value, kwargs, expected):
    result = check_int("n", value, **kwargs)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {}, "Expected `n` to be a positive integer, but got `n=0`."),
        (True, {}, "Expected `n` to be a positive integer, but got `n=True`."),
        (2.0, {}, "Expected `n` to be a positive integer, but got `n=2.0`."),
        ("3", {}, "Expected `n` to be a positive integer, but got `n='3'`."),
        (None, {}, "Expected `n` to be a positive integer, but got `n=None`."),
        (-1, {"minimum": 0}, "Expected `n` to be an integer >= 0, but got `n=-1`."),
        (2, {"minimum": 3}, "Expected `n` to be an integer >= 3, but got `n=2`."),
        (11, {"minimum": 0, "maximum": 10}, "Expected `n` to be an integer in [0, 10], but got `n=11`."),
        (0, {"allow_none": True}, "Expected `n` to be a positive integer or None, but got `n=0`."),
    ],
)
def test_check_int_refuses_with_a_message_naming_the_argument(value, kwargs, message):
    with pytest.raises(ValueError) as info:
        check_int("n", value, **kwargs)
    assert str(info.value) == message


def test_check_int_allow_none():
    assert check_int("input_size", None, allow_none=True) is None


@pytest.mark.parametrize(
    "value, args, kwargs, message",
    [
        (float("nan"), (), {}, "Expected `x` to be a finite number, but got `x=nan`."),
        (float("inf"), (0.0,), {}, "Expected `x` to be a finite number >= 0, but got `x=inf`."),
        (0.0, (0.0,), {"low_inclusive": False}, "Expected `x` to be a finite number > 0, but got `x=0.0`."),
        (2, (None, 1.0), {}, "Expected `x` to be a finite number <= 1, but got `x=2`."),
        (True, (), {}, "Expected `x` to be a finite number, but got `x=True`."),
        ("1", (), {}, "Expected `x` to be a finite number, but got `x='1'`."),
        (1.5, (0.0, 1.0), {}, "Expected `x` to be a number in [0, 1], but got `x=1.5`."),
    ],
)
def test_check_number_refuses(value, args, kwargs, message):
    with pytest.raises(ValueError) as info:
        check_number("x", value, *args, **kwargs)
    assert str(info.value) == message


def test_check_number_accepts_bounds_and_numpy_scalars():
    assert check_number("x", 0.0, 0.0, 1.0) == 0.0
    assert check_number("x", 1, 0.0, 1.0) == 1.0
    result = check_number("x", np.float32(0.5), 0.0, 1.0)
    assert result == 0.5 and type(result) is float


def test_check_rate_is_half_open_unless_asked():
    assert check_rate("dropout", 0.0) == 0.0
    with pytest.raises(ValueError, match=r"^Expected `dropout` to be a number in \[0, 1\), but got `dropout=1.0`.$"):
        check_rate("dropout", 1.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        check_rate("dropout", -0.1)
    assert check_rate("flip_probability", 1.0, high_inclusive=True) == 1.0
    assert check_rate("max_rotation_degrees", 180, 0, 180, high_inclusive=True) == 180.0


def test_check_choice():
    assert check_choice("stem", "grey", ("grey", "rgb")) == "grey"
    assert check_choice("weights", None, ("imagenet", None)) is None
    with pytest.raises(ValueError) as info:
        check_choice("stem", "gray", ("grey", "rgb"))
    assert str(info.value) == "Expected `stem` to be one of 'grey', 'rgb', but got `stem='gray'`."
    with pytest.raises(ValueError, match="one of 1, 2"):
        check_choice("n", True, (1, 2))  # True == 1 in Python, but it is not what a caller meant
