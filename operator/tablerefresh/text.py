"""Text shown to people, whichever plane made it. Pure."""

from __future__ import annotations

from typing import Any

import yaml


def printable(text: str) -> str:
    """``text`` with every control character (C0, C1: ESC, BEL, CR, …; and the invisible format
    characters, such as bidirectional overrides) replaced by a space: a server's error text, shown
    in status, Events, logs or a terminal, cannot move a cursor, colour a log or forge a line."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


# A string this long or longer, or with a line break, is written as a block scalar.
_LONG = 80


class _BlockDumper(yaml.SafeDumper):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value or len(value) >= _LONG else None
    # Where a block cannot hold the text exactly (a line with trailing spaces, a control character),
    # PyYAML writes a quoted scalar instead, by itself.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _string)


def yaml_text(document: Any) -> str:
    """``document`` as YAML for a person to read and edit: a string of several lines, or a long one
    (a source query, a manifest in an env value), as a block scalar (``|``) rather than a quoted
    string full of ``\\n`` escapes; keys in the order given. Loads back to the same document."""
    return yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=120, allow_unicode=True)
