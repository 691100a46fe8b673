"""Text from people and directories, made safe to show.

Names and other free text reach the service from the HR system, the people directory
and the approval form, and are shown back in email subjects, pages and Prefect
artifacts. Invisible Unicode controls can make such text look like something else:
a right-to-left override (U+202E) makes ``Jan \\u202eseirf.exe`` read as
``Jan exe.fries``, zero-width characters hide inside look-alike names, and a line break
in a name forges an extra line ("Approved by: ...") in a plain-text email.

- ``safe_display`` drops those controls and puts everything on one line: for names,
  labels and any other short text.
- ``safe_multiline`` does the same but keeps the line breaks: for free text that is
  meant to have lines, such as a rejection reason.
- ``markdown_escape`` also makes the text literal in Markdown (Prefect artifacts and
  the evidence report), so a name like ``[click](http://evil)`` is not a link.

Letters with diacritics (Zoë, Çelik, Ødegaard) pass unchanged; text is NFC-normalised so
the same name is always the same string.
"""

from __future__ import annotations

import re
import unicodedata

# Bidirectional embeddings, overrides and isolates, and the directional marks.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Zero-width space, non-joiner and joiner, word joiner, byte-order mark.
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
# Hangul fillers: letters by category, yet they draw nothing.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")
_HIDDEN = BIDI_CONTROLS | ZERO_WIDTH | _BLANK_LETTERS
# Control (Cc), format (Cf: soft hyphen, tag characters, ...) and lone surrogates (Cs).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

_SPACES = re.compile(r" {2,}")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def _visible(char: str) -> bool:
    return char not in _HIDDEN and unicodedata.category(char) not in _HIDDEN_CATEGORIES


def _clean(text: str) -> str:
    """Whitespace of any kind becomes a space; invisible characters go."""
    return "".join(
        " " if char.isspace() else char for char in text if char.isspace() or _visible(char)
    )


def safe_display(text: str) -> str:
    """``text`` on one line without invisible controls, as it may be shown to a person.

    Removes bidi controls, zero-width characters and every other control or format
    character; turns tabs, line breaks and other whitespace into spaces (a run of them
    into one space) and NFC-normalises. Leading and trailing spaces are kept: strip
    them where the text stands on its own, as a name does.
    """
    return unicodedata.normalize("NFC", _SPACES.sub(" ", _clean(text)))


def safe_multiline(text: str) -> str:
    """Like ``safe_display``, but line breaks stay (as ``\\n``) and spaces are not merged."""
    return "\n".join(unicodedata.normalize("NFC", _clean(line)) for line in _LINE_BREAK.split(text))


def markdown_escape(text: str) -> str:
    """``safe_display(text)`` with every Markdown-significant character backslash-escaped.

    The result renders as the literal text in CommonMark and GitHub-flavoured Markdown,
    inside a paragraph, a heading or a table cell (``|`` is escaped too). ``&`` is escaped
    so that an entity such as ``&#x202E;`` cannot bring a removed control back.
    Not for code spans: backslashes show there as they are.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", safe_display(text))
