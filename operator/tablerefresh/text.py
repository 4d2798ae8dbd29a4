"""Text shown to people, whichever plane made it. Pure."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every control character (C0, C1: ESC, BEL, CR, …; and the invisible format
    characters, such as bidirectional overrides) replaced by a space: a server's error text, shown
    in status, Events, logs or a terminal, cannot move a cursor, colour a log or forge a line."""
    return "".join(ch if ch.isprintable() else " " for ch in text)
