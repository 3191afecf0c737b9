"""The one gate for text that reaches a renderer: axis labels, tick labels and titles.

matplotlib lays out text in time that grows with its length (a 400,000-character title took
25 s), and the font renderer cannot draw lone surrogates or control characters. So every label
and title is bounded here before any renderer sees it, in time proportional to the *bound*, not
to the input: the text is sliced first and only the slice is inspected.

How text is shortened:

* a label keeps its first ``LABEL_CHARS - 1`` characters and ends in an ellipsis (U+2026);
* a title keeps its first ``TITLE_CHARS - 1`` characters, likewise;
* the parts of a title built from user text (token labels in a trace title) are bounded as
  labels first, so a title names both tokens instead of being filled by the first one;
* characters that cannot be drawn (controls, lone surrogates, unassigned or private-use
  code points) become U+FFFD; line breaks and tabs become spaces.

Pure: no matplotlib, no Flask.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

LABEL_CHARS = 24
TITLE_CHARS = 80
ELLIPSIS = "\u2026"
REPLACEMENT = "\ufffd"

# Categories the font renderer cannot show meaningfully: controls, surrogates, unassigned and
# private use. Format characters (Cf: ZWJ, bidi marks) are dropped to U+FFFD too: a label must
# not reorder or hide its neighbours.
_UNDRAWABLE = {"Cc", "Cs", "Cn", "Co", "Cf", "Zl", "Zp"}
_SPACES = {"\t", "\n", "\r"}


def _drawable(ch: str) -> str:
    if ch in _SPACES:
        return " "
    if ch.isascii():
        return ch if ch.isprintable() else REPLACEMENT
    return REPLACEMENT if unicodedata.category(ch) in _UNDRAWABLE else ch


def bound_text(text: object, limit: int) -> str:
    """``text`` as at most ``limit`` drawable characters (an ellipsis marks a cut)."""
    value = text if isinstance(text, str) else str(text)
    # Slice before anything else: the cost is O(limit) whatever the input's length.
    cut = len(value) > limit
    head = value[: limit - 1] if cut else value
    clean = "".join(_drawable(ch) for ch in head)
    return clean + ELLIPSIS if cut else clean


def bound_label(label: object) -> str:
    """One axis or tick label, at most :data:`LABEL_CHARS` characters."""
    return bound_text(label, LABEL_CHARS)


def bound_labels(labels: Sequence[object] | None) -> list[str] | None:
    """Every label of an axis bounded (``None`` stays ``None``)."""
    if labels is None:
        return None
    return [bound_label(label) for label in labels]


def bound_title(title: object) -> str:
    """A figure title, at most :data:`TITLE_CHARS` characters."""
    return bound_text(title, TITLE_CHARS)
