"""The text view: the input as wrapped text, each token on a background coloured by its value.

A matrix stops being readable past a few dozen tokens; running text stays readable at thousands,
because it wraps instead of shrinking. Nothing is pooled: every token keeps its own box.

Two pure steps, so the page and the PNG agree to the pixel:

- :func:`layout_text` turns token labels into display pieces (word pieces glued back, byte-level
  and SentencePiece markers turned into spaces and line breaks) and wraps them into lines of a
  given width. It returns each token's box in PNG pixels; the JSON answer carries the same boxes
  so a client can hit-test a click on the picture.
- :func:`text_png` paints that layout: a title, a colour scale with its value range, then the text.

The font is DejaVu Sans from matplotlib's data folder (shipped with the wheel, so every machine
draws the same pixels); it covers Latin, Greek and Cyrillic, other scripts show as boxes.
Imports neither Flask nor torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.render.colormaps import LEVELS, palette
from app.render.normalize import to_indices
from app.render.photo_png import encode_rgb_up

_MIN_FONT = 11
_MAX_FONT = 28
_PUNCTUATION = set(".,;:!?)]}%'\u2019\u201d-/")
_OPENING = set("([{\u2018\u201c'\u2019-/")
_VISIBLE_SPACE = "\u2423"


class TextTooLong(ValueError):
    """The wrapped text would be taller than the output limit even at the widest allowed width."""


@dataclass(frozen=True)
class Piece:
    """One token as displayed: its text, and whether a space or a line break comes before it."""

    text: str
    space_before: bool
    breaks_before: int = 0


@dataclass(frozen=True)
class TextLayout:
    """Where every token goes: ``boxes[i] = (x, y, w, h)`` in PNG pixels of a ``width x height`` image."""

    width: int
    height: int
    font_px: int
    line_height: int
    header_height: int
    pieces: tuple[Piece, ...]
    boxes: tuple[tuple[int, int, int, int], ...]


@lru_cache(maxsize=1)
def _font_file() -> str:
    import matplotlib  # only for the location of its bundled DejaVu fonts

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


@lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(_font_file(), px)


def font_size(width: int) -> int:
    """Text size in px for an image ``width`` px wide: 13 px at 512 px, growing with the square
    root of the width (18 px at 1024, 26 px at 2048), so wider pictures hold more words per line."""
    return int(min(_MAX_FONT, max(_MIN_FONT, round(13 * (width / 512) ** 0.5))))


@lru_cache(maxsize=65536)
def _text_width(text: str, px: int) -> float:
    # Long inputs repeat their words: measuring each distinct one once keeps a 4,000-token layout fast.
    return float(_font(px).getlength(text))


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of the byte-to-character table of byte-level BPE (GPT-2, Llama 3, SmolLM2)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _scheme(labels: Sequence[str]) -> str:
    """``bytes`` (byte-level BPE), ``sentencepiece`` (``▁`` marks a word start) or ``words``."""
    joined = "".join(labels[:512])
    if "\u0120" in joined or "\u010a" in joined:
        return "bytes"
    if "\u2581" in joined:
        return "sentencepiece"
    return "words"


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text)


def display_pieces(labels: Sequence[str], special: Sequence[int] = ()) -> list[Piece]:
    """Token labels as readable running text.

    WordPiece ``##x`` is glued to the token before it; byte-level BPE labels are decoded from
    their byte alphabet (``Ġ`` is a space, ``Ċ`` a line break); SentencePiece ``▁`` is a space and
    ``<0x0A>`` a line break. Plain labels (raw weights, WordPiece words) are separated by spaces,
    except before closing punctuation. Special tokens always stand apart. A token that would show
    nothing (a lone space) shows as ``␣`` so it keeps a box that can be seen and clicked.
    """
    scheme = _scheme(labels)
    specials = set(special)
    decoder = _byte_decoder()
    pieces: list[Piece] = []
    for position, label in enumerate(labels):
        breaks = 0
        if position in specials:
            text, space = label, position > 0
        elif scheme == "bytes":
            raw = bytes(decoder.get(ch, 0x3F) for ch in label) if all(ch in decoder for ch in label) else label.encode()
            decoded = raw.decode("utf-8", errors="replace")
            breaks = len(decoded) - len(decoded.lstrip("\n\r"))
            decoded = decoded.lstrip("\n\r")
            space = decoded[:1].isspace()
            text = decoded.strip()
        elif scheme == "sentencepiece":
            if label == "<0x0A>":
                breaks, text, space = 1, "", False
            else:
                space = label.startswith("\u2581")
                text = label.replace("\u2581", " ").strip()
        elif label.startswith("##") and len(label) > 2:
            text, space = label[2:], False
        else:
            text = label
            previous = labels[position - 1] if position else ""
            space = position > 0 and not (len(text) == 1 and text in _PUNCTUATION) and not (
                len(previous) == 1 and previous in _OPENING)
        text = _printable(text)
        space = space and position > 0
        if not text:
            text = "\u21b5" if breaks else _VISIBLE_SPACE
        pieces.append(Piece(text=text, space_before=space, breaks_before=min(breaks, 2)))
    return pieces


def _fit(text: str, font: ImageFont.FreeTypeFont, room: float) -> str:
    """``text`` cut (with an ellipsis) so that it is at most ``room`` px wide."""
    if _text_width(text, int(font.size)) <= room:
        return text
    while len(text) > 1 and font.getlength(text + "\u2026") > room:
        text = text[: max(1, len(text) * 3 // 4)]
    return text + "\u2026"


def layout_text(labels: Sequence[str], width: int, *, special: Sequence[int] = (),
                font_px: int | None = None) -> TextLayout:
    """Wrap the tokens into lines ``width`` px wide; each token gets a box (see :class:`TextLayout`).

    The font size follows the width (:func:`font_size`) unless ``font_px`` fixes it.
    """
    px = font_px or font_size(width)
    font = _font(px)
    pad = max(8, px)
    line_height = round(px * 1.6)
    box_pad = max(1, px // 6)
    space = font.getlength(" ")
    header_height = pad + 2 * line_height + pad // 2  # title line, colour scale line
    right = width - pad
    fitted: list[Piece] = []
    boxes: list[tuple[int, int, int, int]] = []
    x, y = float(pad), float(header_height)
    for index, piece in enumerate(display_pieces(labels, special)):
        text = _fit(piece.text, font, right - pad - 2 * box_pad)
        advance = _text_width(text, px) + 2 * box_pad
        if piece.breaks_before and index:
            y += line_height * piece.breaks_before
            x = float(pad)
        elif piece.space_before and x > pad:
            x += space
        if x + advance > right and x > pad:
            y += line_height
            x = float(pad)
        boxes.append((round(x), round(y), max(1, round(advance)), line_height - 2))
        fitted.append(Piece(text, piece.space_before, piece.breaks_before))
        x += advance
    height = round(y + line_height + pad) if fitted else header_height + pad
    return TextLayout(width=width, height=int(height), font_px=px, line_height=line_height,
                      header_height=header_height, pieces=tuple(fitted), boxes=tuple(boxes))


def fit_layout(labels: Sequence[str], width: int, *, max_side: int, max_pixels: int,
               special: Sequence[int] = ()) -> TextLayout:
    """:func:`layout_text` at ``width``, widened (same font) while the text is taller than ``max_side``.

    Long inputs wrap into many lines; rather than shrink the text, the picture gets wider, up to
    ``max_side``. Raises :class:`TextTooLong` when even that does not fit.
    """
    layout = layout_text(labels, width, special=special)
    while layout.height > max_side or layout.width * layout.height > max_pixels:
        if layout.width >= max_side:
            raise TextTooLong(f"{len(labels)} tokens do not fit in {max_side} x {max_side} px at a legible size; "
                              f"send fewer tokens")
        wider = min(max_side, int(layout.width * max(1.15, (layout.height / max_side) ** 0.5 * 1.05)))
        layout = layout_text(labels, wider, special=special, font_px=layout.font_px)
    return layout


def _ink(rgb: np.ndarray) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``rgb`` (relative luminance)."""
    r, g, b = (float(c) / 255.0 for c in rgb[:3])
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else (255, 255, 255)


@lru_cache(maxsize=8192)
def _glyphs(text: str, px: int) -> tuple[np.ndarray, int, int]:
    """Coverage (0..255) of ``text`` drawn at ``px`` and its offset from the drawing origin.

    Rasterising is most of the cost of a long text (0.5 ms a word); words repeat, so each
    distinct one is drawn once and then composited from this cache.
    """
    font = _font(px)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font)
    coverage = np.asarray(mask)
    coverage.setflags(write=False)
    return coverage, int(left), int(top)


def _paint_tokens(canvas: np.ndarray, layout: TextLayout, colours: np.ndarray, indices: np.ndarray) -> None:
    """Each token's box in its colour and its text in black or white, straight into ``canvas``."""
    px = layout.font_px
    box_pad = max(1, px // 6)
    height, width = canvas.shape[:2]
    for i, (piece, (x, y, w, h)) in enumerate(zip(layout.pieces, layout.boxes, strict=True)):
        colour = colours[indices[i]] if i < len(indices) else colours[0]
        # One white pixel column between boxes, so glued word pieces of the same colour stay apart.
        canvas[y : y + h, x : x + max(1, w - 1)] = colour
        coverage, left, top = _glyphs(piece.text, px)
        gx, gy = x + box_pad + left, round(y + (h - px) / 2 - px * 0.1) + top
        gh, gw = min(coverage.shape[0], height - gy), min(coverage.shape[1], width - gx)
        if gh <= 0 or gw <= 0 or gx < 0 or gy < 0:
            continue
        alpha = coverage[:gh, :gw, None].astype(np.uint16)
        region = canvas[gy : gy + gh, gx : gx + gw]
        ink = np.array(_ink(colour), dtype=np.uint16)
        region[...] = ((region.astype(np.uint16) * (255 - alpha) + ink * alpha + 127) // 255).astype(np.uint8)


def text_png(layout: TextLayout, scaled: np.ndarray, *, low: float, high: float, colormap: str, title: str,
             query: int | None = None, clipped: Sequence[int] = (), note: str = "", level: int = 1) -> bytes:
    """PNG of the laid-out text; token ``i``'s background is the colour of ``scaled[i]`` (in [0, 1]).

    ``low``/``high`` label the colour scale. ``query`` gets a red outline (the row being shown);
    ``clipped`` positions (left out of the colour range) get a dashed underline, and ``note``
    says why, next to the scale.
    """
    canvas = np.full((layout.height, layout.width, 3), 255, dtype=np.uint8)
    colours = palette(colormap)
    indices = to_indices(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0))
    _paint_tokens(canvas, layout, colours, indices)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    px = layout.font_px
    font = _font(px)
    small = _font(max(_MIN_FONT - 1, px - 2))
    pad = max(8, px)
    draw.text((pad, pad), _fit(title, font, layout.width - 2 * pad), fill=(20, 20, 20), font=font)
    _scale(draw, colours, pad, pad + layout.line_height, layout, low, high, note, small)
    for i in clipped:
        if 0 <= i < len(layout.boxes):
            x, y, w, h = layout.boxes[i]
            for start in range(x, x + w - 1, 4):
                draw.line((start, y + h - 2, min(start + 1, x + w - 2), y + h - 2), fill=(230, 0, 0), width=2)
    if query is not None and 0 <= query < len(layout.boxes):
        x, y, w, h = layout.boxes[query]
        thickness = max(2, px // 7)
        draw.rectangle((x - thickness, y - thickness, x + w - 1 + thickness, y + h - 1 + thickness),
                       outline=(230, 0, 0), width=thickness)
        draw.rectangle((x - thickness - 1, y - thickness - 1, x + w + thickness, y + h + thickness),
                       outline=(255, 255, 255), width=1)
    return encode_rgb_up(np.asarray(image), level)


def _scale(draw: ImageDraw.ImageDraw, colours: np.ndarray, x: int, y: int, layout: TextLayout, low: float,
           high: float, note: str, font: ImageFont.FreeTypeFont) -> None:
    """A horizontal colour bar with its low and high values (and a note) on one header line."""
    label_low, label_high = f"{low:.3g}", f"{high:.3g}"
    bar_height = max(6, layout.line_height // 2)
    top = y + (layout.line_height - bar_height) // 2
    draw.text((x, top + bar_height / 2), label_low, fill=(20, 20, 20), font=font, anchor="lm")
    start = x + int(font.getlength(label_low)) + 6
    length = max(40, min(layout.width // 3, 320))
    steps = np.linspace(0, LEVELS - 1, length).astype(int)
    for offset, index in enumerate(steps):
        draw.line((start + offset, top, start + offset, top + bar_height), fill=tuple(int(c) for c in colours[index]))
    draw.rectangle((start - 1, top - 1, start + length, top + bar_height), outline=(120, 120, 120))
    after = start + length + 6
    draw.text((after, top + bar_height / 2), label_high, fill=(20, 20, 20), font=font, anchor="lm")
    if note:
        note_x = after + int(font.getlength(label_high)) + 12
        room = layout.width - note_x - x
        if room > 40:
            draw.text((note_x, top + bar_height / 2), _fit(note, font, room), fill=(90, 90, 90), font=font, anchor="lm")
