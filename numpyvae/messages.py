"""Messages that stay one line and paths a user can paste back into a shell, whatever the path holds.

A run folder's name may hold a newline, a tab, spaces, glob characters or bytes that are not
UTF-8 (Python hands those over as "surrogate escapes"). `shown` makes such a path printable on
one line; `shell_quote` makes it one shell word that names the very same path.
"""
from __future__ import annotations

import os
import re
import shlex


def _escape(char):
    """A character as bash's $'...' writes it: \\n, \\t, \\xHH for each byte of anything unprintable."""
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}
    if char in named:
        return named[char]
    if char.isprintable():
        return char
    return "".join(f"\\x{byte:02x}" for byte in os.fsencode(char))   # a surrogate escape is its one byte


def shown(path):
    """`path` as text that prints anywhere on one line: its characters, with unprintable ones escaped."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def shell_quote(path):
    """`path` as one word for bash or zsh: 'quoted' where that is enough, else $'escaped' (one line)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join(_escape(char) for char in text) + "'"


def one_line(text):
    """A message on one line: line breaks (and the spaces around them) become one space, other
    unprintable characters are escaped."""
    text = re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()
    return shown(text)
