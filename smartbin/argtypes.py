"""Argument types shared by every subcommand, so a bad number reads the same everywhere
(argparse turns ``ArgumentTypeError`` into exit code 2 and one line)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


def float_between(low: float, high: float, *, include_high: bool = True) -> Callable[[str], float]:
    """A number in [low, high] (or [low, high) with ``include_high=False``)."""
    bracket = "]" if include_high else ")"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = low <= value <= high if include_high else low <= value < high
        if not inside:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}{bracket}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def fold_of_folds(text: str) -> tuple[int, int]:
    """``K/N``: fold K of N (1 <= K <= N, N >= 2)."""
    parts = text.split("/")
    try:
        fold, folds = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 1/2, got {text!r}") from None
    if folds < 2 or not 1 <= fold <= folds:
        raise argparse.ArgumentTypeError(f"expected K/N with N >= 2 and 1 <= K <= N, got {text}")
    return fold, folds


fold_of_folds.__name__ = "K/N"

positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
probability = float_between(0.0, 1.0)
fraction = float_between(0.0, 1.0, include_high=False)
