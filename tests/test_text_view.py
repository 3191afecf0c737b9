"""``view=text``: the pure layout and painting (app/render/text.py), and the view through the API."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from app.core.errors import InvalidInput
from app.core.tokens import find_token, received_attention
from app.render import text as text_render
from app.render.normalize import normalize, token_range_mask
from tests.helpers import decode_png

# ---------------------------------------------------------------------------------------------
# Display pieces: word pieces glued, byte-level and SentencePiece markers decoded


def _running(labels, special=()):
    return "".join((" " * p.space_before if not p.breaks_before else "\n" * p.breaks_before) + p.text
                   for p in text_render.display_pieces(labels, special))


def test_wordpiece_tokens_read_as_running_text():
    labels = ["[CLS]", "he", "never", "smo", "##ked", ".", "it", "'", "s", "state", "-", "of", "-", "the", "-", "art", "[SEP]"]
    assert _running(labels, [0, 16]) == "[CLS] he never smoked. it's state-of-the-art [SEP]"


def test_byte_level_tokens_are_decoded_with_spaces_and_line_breaks():
    # GPT-2 / Llama-3 / SmolLM2 style: Ġ is a space, Ċ a newline, âĢĻ the bytes of a right quote.
    labels = ["The", "Ġcat", "Ġdoesn", "âĢĻ", "t", "Ġsit", ".", "Ċ", "Next", "Ġline"]
    pieces = text_render.display_pieces(labels)
    assert [p.text for p in pieces[:6]] == ["The", "cat", "doesn", "\u2019", "t", "sit"]
    assert pieces[1].space_before and not pieces[3].space_before
    assert pieces[8].breaks_before == 0 and pieces[7].breaks_before == 1 and pieces[7].text == "\u21b5"


def test_sentencepiece_markers_become_spaces():
    assert _running(["\u2581The", "\u2581cat", "s", "\u2581sat"]) == "The cats sat"


def test_a_token_that_shows_nothing_keeps_a_visible_box():
    pieces = text_render.display_pieces(["a", "\u0120", "b"])
    assert pieces[1].text == "\u2423"


# ---------------------------------------------------------------------------------------------
# Layout


def _words(count: int) -> list[str]:
    base = ["the", "committee", "met", "on", "a", "grey", "tuesday", "morning", "to",
            "decide", "whether", "the", "old", "railway", "bridge", "should", "be", "repaired"]
    return [base[i % len(base)] for i in range(count)]


@pytest.mark.parametrize("width", [256, 512, 1024])
def test_boxes_stay_inside_the_picture_and_never_overlap(width):
    layout = text_render.layout_text(_words(300), width)
    assert len(layout.boxes) == 300
    for x, y, w, h in layout.boxes:
        assert x >= 0 and x + w <= width and layout.header_height <= y and y + h <= layout.height
    rows: dict[int, list[tuple[int, int]]] = {}
    for x, y, w, _h in layout.boxes:
        rows.setdefault(y, []).append((x, x + w))
    for spans in rows.values():
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert len(rows) > 1  # it wraps


def test_four_thousand_tokens_fit_without_pooling_at_a_legible_size():
    layout = text_render.fit_layout(_words(4000), 512, max_side=4096, max_pixels=16_000_000)
    assert len(layout.boxes) == 4000
    assert layout.height <= 4096 and layout.width <= 4096
    assert layout.font_px >= 13  # the text was widened, not shrunk


def test_text_too_long_for_the_output_limits_is_refused():
    with pytest.raises(text_render.TextTooLong):
        text_render.fit_layout(_words(4000), 512, max_side=1024, max_pixels=16_000_000)


def test_font_grows_with_width():
    assert text_render.font_size(512) == 13 and text_render.font_size(1024) == 18 and text_render.font_size(2048) == 26


def test_painted_tokens_take_their_colour():
    labels = ["low", "high"]
    layout = text_render.layout_text(labels, 256)
    png = text_render.text_png(layout, np.array([0.0, 1.0]), low=0.0, high=1.0, colormap="viridis", title="t")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape[:2] == (layout.height, layout.width)
    from app.render.colormaps import palette

    for index, (x, y, _w, _h) in enumerate(layout.boxes):
        assert tuple(pixels[y + 1, x + 1]) == tuple(palette("viridis")[0 if index == 0 else 254])


# ---------------------------------------------------------------------------------------------
# Received attention, normalisation, token lookup


def test_received_attention_averages_over_the_queries_that_can_see_a_key():
    causal = np.tril(np.ones((4, 4)))
    causal /= causal.sum(axis=1, keepdims=True)
    # Key 3 is seen only by query 3 (weight 1/4): its received attention is 0.25, not 0.0625.
    np.testing.assert_allclose(received_attention(causal)[3], 0.25)
    full = np.full((3, 3), 1 / 3)
    np.testing.assert_allclose(received_attention(full), [1 / 3] * 3)


def test_percentile_keeps_structure_when_one_column_dominates():
    # A sink column and a diagonal: 600 of 90,000 cells, under the 1% the percentile clips.
    matrix = np.random.default_rng(0).uniform(0.0, 0.02, (300, 300))
    matrix[:, 0] = 0.5
    matrix[np.arange(300), np.arange(300)] = 0.2
    minmax, _, _ = normalize(matrix)
    clipped, low, high = normalize(matrix, "percentile")
    assert minmax[5, 5] < 0.5 and clipped[5, 5] == pytest.approx(1.0) and high < 0.5
    # The background keeps its own spread instead of sitting in the bottom 4% of the colours.
    assert np.percentile(minmax[1:, 1:], 90) < 0.04 and np.percentile(clipped[1:, 1:], 90) > 0.8
    masked, _, high_masked = normalize(matrix, "minmax", counted=token_range_mask(matrix.shape, [0]))
    assert high_masked == pytest.approx(0.2) and masked[3, 0] == 1.0
    rows, low, high = normalize(matrix, "row")
    assert (low, high) == (0.0, 1.0) and rows.max(axis=1).tolist() == [1.0] * 300


def test_token_lookup_ignores_case_and_markers_and_lists_the_tokens():
    labels = ["[CLS]", "he", "Ġnever", "##smoked", "[SEP]"]
    assert find_token(labels, "He", "query") == 1
    assert find_token(labels, "never", "query") == 2
    assert find_token(labels, "smoked", "query") == 3
    with pytest.raises(InvalidInput) as error:
        find_token(labels, "zebra", "query")
    assert "0:'[CLS]', 1:'he'" in str(error.value) and error.value.code == "unknown_token"
    with pytest.raises(InvalidInput) as many:
        find_token([f"t{i}" for i in range(100)], "zebra", "key")
    assert "and 60 more" in str(many.value)


# ---------------------------------------------------------------------------------------------
# Through the API (raw weights: no model needed)


def _stack(tokens: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    weights = rng.random((2, 3, tokens, tokens))
    return (weights / weights.sum(axis=-1, keepdims=True)).round(6).tolist()


def test_text_view_png_and_json_agree(client):
    tokens = ["[CLS]", "the", "cat", "sat", "[SEP]"]
    body = {"weights": _stack(5), "tokens": tokens, "view": "text", "query": "Cat"}
    png = client.post("/visualize", json=body)
    assert png.status_code == 200 and png.mimetype == "image/png"
    document = client.post("/visualize", json={**body, "format": "json"}).get_json()
    meta = document["meta"]
    assert meta["view"] == "text" and meta["query"] == 2 and document["shape"] == [5]
    assert len(meta["boxes"]) == 5 and meta["image_size"] == list(Image.open(io.BytesIO(png.data)).size)
    assert png.headers["X-Attnmap-View"] == "text" and png.headers["X-Attnmap-Query"] == "2"


def test_text_view_without_a_query_shows_received_attention(client):
    weights = np.array(_stack(4))
    document = client.post("/visualize", json={"weights": weights.tolist(), "view": "text", "layer": 1, "head": 2,
                                               "format": "json"}).get_json()
    np.testing.assert_allclose(document["values"], weights[1, 2].mean(axis=0), rtol=1e-6)
    assert document["meta"]["received"] is True and document["meta"]["key_tokens"] == ["0", "1", "2", "3"]


def test_four_thousand_tokens_render_as_text(client):
    row = np.random.default_rng(1).random(4000)
    tokens = _words(4000)
    response = client.post("/visualize", json={"weights": [(row / row.sum()).tolist()], "tokens": tokens,
                                               "view": "text", "query": 0})
    assert response.status_code == 200, response.get_json()
    pixels = decode_png(response.data)
    assert pixels.shape[0] <= 4096 and pixels.shape[1] >= 512


def test_multipart_query_and_key_accept_integers_negative_too(client):
    stack = np.random.default_rng(2).random((2, 2, 4, 4)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, stack, allow_pickle=False)

    def form(**fields):
        data = {name: str(value) for name, value in fields.items()}
        data["weights"] = (io.BytesIO(buffer.getvalue()), "attn.npy")
        return client.post("/visualize", data=data, content_type="multipart/form-data")

    rollout = form(method="rollout", query=0, format="json")
    assert rollout.status_code == 200 and rollout.get_json()["meta"]["query"] == 0
    last = form(query=-1, format="json")
    assert last.status_code == 200 and last.get_json()["shape"] == [4]  # one query row: the last
    trace = form(view="trace", query=1, key=3, format="json")
    assert trace.status_code == 200 and trace.get_json()["meta"]["key_index"] == 3
    text = form(view="text", query=-2, format="json")
    assert text.status_code == 200 and text.get_json()["meta"]["query"] == 2


def test_clip_special_leaves_special_columns_out_of_the_range(client):
    weights = np.full((6, 6), 0.02)
    weights[:, 0] = 0.9
    weights[:, 3] = 0.08
    body = {"weights": weights.tolist(), "tokens": ["a", "b", "c", "d", "e", "f"], "view": "text", "format": "json"}
    assert client.post("/visualize", json=body).get_json()["meta"]["clipped_positions"] == []
    # Raw weights have no special tokens; clip_special is then a no-op, not an error.
    assert client.post("/visualize", json={**body, "clip_special": True}).status_code == 200


def test_example_weight_files_in_the_readme_load():
    from tests.live import ROOT

    stack = np.load(ROOT / "examples" / "attn.npy", allow_pickle=False)
    tokens = json.loads((ROOT / "examples" / "tokens.json").read_text())
    assert stack.shape == (2, 4, len(tokens), len(tokens)) and stack.dtype == np.float32
    np.testing.assert_allclose(stack.sum(axis=-1), 1.0, atol=1e-5)


def test_json_reports_the_colour_range_when_it_is_not_the_value_range(client):
    weights = np.random.default_rng(4).uniform(0.0, 0.02, (300, 300))
    weights[:, 0] = 0.9
    body = {"weights": weights.round(5).tolist(), "format": "json"}
    plain = client.post("/visualize", json=body).get_json()["meta"]
    assert "colour_range" not in plain
    clipped = client.post("/visualize", json={**body, "normalize": "percentile"}).get_json()["meta"]
    assert clipped["value_range"][1] == pytest.approx(0.9) and clipped["colour_range"][1] < 0.05
    text = client.post("/visualize", json={**body, "view": "text", "normalize": "percentile"}).get_json()["meta"]
    assert text["colour_range"][1] < text["value_range"][1]
