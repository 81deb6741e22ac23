"""Argument types shared by the management commands."""

from __future__ import annotations

import argparse

from llm_providers.json_values import TEXT_NUL, text_problem


def text(value: str) -> str:
    """A text argument that can be stored and sent: valid UTF-8, without NUL.

    Python hands bytes of a command line that are not UTF-8 (a terminal in
    another encoding) to the program as unpaired surrogates, which neither
    PostgreSQL nor a provider takes; argparse reports the refusal naming the
    argument, without a traceback.
    """
    problem = text_problem(value)
    if problem == TEXT_NUL:
        raise argparse.ArgumentTypeError("must not contain NUL characters.")
    if problem is not None:
        raise argparse.ArgumentTypeError(
            "is not valid UTF-8 text; check the terminal's character encoding (e.g. LANG=C.UTF-8)."
        )
    return value
