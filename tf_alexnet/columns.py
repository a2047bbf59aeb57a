"""Text tables for terminals: names padded by the columns they take on screen, not by their
characters (a CJK character takes two, a combining accent none)."""

from __future__ import annotations

import unicodedata


def screen_width(text: str) -> int:
    """The terminal columns `text` takes: wide and full-width characters two, combining and
    zero-width ones none, the others one."""
    return sum(
        0
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf")
        else 2
        if unicodedata.east_asian_width(char) in ("W", "F")
        else 1
        for char in text
    )


def pad(text: str, width: int) -> str:
    """`text` followed by spaces up to `width` screen columns (`str.ljust` counts characters)."""
    return text + " " * max(0, width - screen_width(text))
