"""File names that are not valid UTF-8, stored losslessly in SQLite text.

On POSIX a file name is bytes.  Python decodes a name that is not valid UTF-8 (an old
archive's Latin-1 ``caf\\xe9.jpg``) with *surrogateescape*: every undecodable byte
``0xNN`` becomes the lone surrogate ``U+DCNN``.  SQLite text (and Python's sqlite3
module) cannot hold lone surrogates, so such a name cannot be stored as it is.

The stored form maps each escaped byte ``0xNN`` (``0x80..0xFF``) to the private-use
character ``U+EFNN`` (the OPTU-8 convention).  Names that are valid UTF-8 are stored
unchanged, so existing libraries keep their paths.  To stay lossless, a name that
really contains a character of ``U+EF80..U+EFFF`` stores that character's UTF-8 bytes
escaped the same way; decoding then gives back exactly the original bytes.

* :func:`to_stored` — a name (or path) as the OS gave it → the text to store;
* :func:`to_os` — stored text → the name to open the file with;
* :func:`for_display` — stored text → readable text, raw bytes shown as ``\\xNN``.
"""

from __future__ import annotations

import os

_SURROGATE_LO, _SURROGATE_HI = 0xDC80, 0xDCFF
_ESCAPE_BASE = 0xEF00
_ESCAPE_LO, _ESCAPE_HI = 0xEF80, 0xEFFF


def _escape_byte(byte: int) -> str:
    return chr(_ESCAPE_BASE + byte)


def to_stored(name: str) -> str:
    """The text to store for *name* (an ``os``-decoded name or path)."""
    if name.isascii():
        return name  # the common case, one C-speed check
    out: list[str] = []
    for char in name:
        code = ord(char)
        if _SURROGATE_LO <= code <= _SURROGATE_HI:
            out.append(_escape_byte(code - 0xDC00))
        elif _ESCAPE_LO <= code <= _ESCAPE_HI:
            out.extend(_escape_byte(b) for b in char.encode("utf-8"))
        elif 0xD800 <= code <= 0xDFFF:
            # Another lone surrogate (a Windows name that is not valid UTF-16): keep its
            # UTF-8-ish bytes, escaped, so the text stays storable.
            out.extend(_escape_byte(b) for b in char.encode("utf-8", "surrogatepass"))
        else:
            out.append(char)
    return "".join(out)


def _raw_bytes(stored: str) -> bytes:
    data = bytearray()
    for char in stored:
        code = ord(char)
        if _ESCAPE_LO <= code <= _ESCAPE_HI:
            data.append(code - _ESCAPE_BASE)
        else:
            data += char.encode("utf-8")
    return bytes(data)


def is_escaped(stored: str) -> bool:
    """Whether *stored* holds escaped bytes (the name was not valid UTF-8)."""
    return not stored.isascii() and any(_ESCAPE_LO <= ord(c) <= _ESCAPE_HI for c in stored)


def to_os(stored: str) -> str:
    """The name or path to give the OS for *stored* (surrogate-escaped where needed)."""
    if not is_escaped(stored):
        return stored
    raw = _raw_bytes(stored)
    try:
        return raw.decode("utf-8")  # escaped U+EFxx characters of a real name
    except UnicodeDecodeError:
        return os.fsdecode(raw) if os.name != "nt" else raw.decode("utf-8", "surrogateescape")


def for_display(stored: str) -> str:
    """*stored* as readable text: undecodable bytes are shown as ``\\xNN``."""
    if not is_escaped(stored):
        return stored
    return _raw_bytes(stored).decode("utf-8", "backslashreplace")
