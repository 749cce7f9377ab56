"""The command a paper page shows, built from the Makefile itself so the two cannot drift.

The page shows `make reproduce PAPER=<id> TIER=<tier>`; this module reads the Makefile's variables
and its `reproduce` recipe and refuses to build the line if either no longer takes them.
"""

from __future__ import annotations

import re
from pathlib import Path

from evals.paths import ROOT

MAKEFILE = ROOT / "Makefile"
TARGET = "reproduce"
PARAMETERS = ("PAPER", "TIER")


class MakefileError(ValueError):
    """The Makefile no longer has what the command line needs; the message names it."""


def makefile_variables(text: str) -> dict[str, str]:
    """`NAME ?= value`, `NAME := value` and `NAME = value` assignments at the top level."""
    out = {}
    for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?=|:=|=)\s*(.*?)\s*$", text, re.M):
        out[m.group(1)] = m.group(2)
    return out


def recipe(text: str, target: str) -> str:
    """The tab-indented lines under `target:`."""
    m = re.search(rf"^{re.escape(target)}\s*:[^\n]*\n((?:\t[^\n]*\n?)+)", text, re.M)
    return m.group(1) if m else ""


def reproduce_command(paper: str, tier: str, makefile: Path = MAKEFILE) -> str:
    text = makefile.read_text()
    variables, body = makefile_variables(text), recipe(text, TARGET)
    if not body:
        raise MakefileError(f"{makefile}: no '{TARGET}' target with a recipe")
    for name in PARAMETERS:
        if name not in variables:
            raise MakefileError(f"{makefile}: variable '{name}' is not defined")
        if f"$({name})" not in body:
            raise MakefileError(f"{makefile}: the '{TARGET}' recipe does not use $({name})")
    values = {"PAPER": paper, "TIER": tier}
    return f"make {TARGET} " + " ".join(f"{name}={values[name]}" for name in PARAMETERS)
