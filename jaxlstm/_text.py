"""Error-message text: plain, without terminal colour codes."""

import re

_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """`text` without terminal colour codes (Keras wraps the errors of its layers in bold, ``\\x1b[1m``)."""
    return _TERMINAL_CODES.sub("", text)
