"""Subcommands of this part (registered into the `smartbin` command)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this part's subcommands; heavy imports happen inside each command's function."""
