"""The HTTP API's JSON maps equal references computed from ``output_attentions`` of the same model.

Tiny random ViT, distilled DeiT (2 prefix tokens) and DINOv2 with 4 registers (5 prefix tokens,
shortest-edge resize + centre crop) are saved to disk and served through ``create_app``. The
reference reloads the weights with transformers, preprocesses with transformers' own PIL image
processors and reduces with the formulas written out in ``vision_support``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.vision_support import (
    build_tiny,
    load_adapter,
    png_bytes,
    post_image,
    random_image,
    reference_attentions,
    reference_gradients,
    reference_model,
    reference_pixels,
    reference_relevance,
    reference_rollout,
    rows_stochastic,
)

FAMILIES = ("vit", "deit", "dinov2reg")
PREFIX = {"vit": 1, "deit": 2, "dinov2reg": 5}
TOL = 1e-5


@pytest.fixture(scope="module")
def served(make_app, tmp_path_factory):
    root = tmp_path_factory.mktemp("vision-models")
    paths = {kind: build_tiny(root, kind) for kind in (*FAMILIES, "vit-wide", "vit-shortest")}
    adapters = {kind: load_adapter(path) for kind, path in paths.items()}
    client = make_app(*adapters.values()).test_client()
    return paths, adapters, client


def _json_map(client, model, image, **fields):
    response = post_image(client, png_bytes(image), model=model, format="json", **fields)
    assert response.status_code == 200, response.get_json()
    document = response.get_json()
    return np.asarray(document["values"], dtype=np.float64), document["meta"]


def _patches(row: np.ndarray, prefix: int, grid: list[int]) -> np.ndarray:
    return row[prefix:].reshape(grid)


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize(("head", "layer"), [(0, 0), (3, 1), ("mean", -1), ("max", 1)])
def test_attention_matches_output_attentions(served, kind, head, layer):
    paths, _, client = served
    image = random_image(48, 64, seed=3)  # non-square upload: ViT/DeiT stretch it, DINOv2 resizes + crops
    values, meta = _json_map(client, kind, image, method="attention", head=head, layer=layer)
    attentions, _ = reference_attentions(reference_model(paths[kind]), reference_pixels(paths[kind], image))
    heads = attentions[layer]
    if head == "mean":
        fused = heads.mean(axis=0)
    elif head == "max":
        fused = rows_stochastic(heads.max(axis=0))
    else:
        fused = heads[head]
    expected = _patches(fused[0], PREFIX[kind], meta["grid"])
    assert meta["prefix_tokens_dropped"] == PREFIX[kind]
    assert meta["grid"] == [4, 4]
    np.testing.assert_allclose(values, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("layer", [-1, 1])
def test_rollout_matches_output_attentions(served, kind, layer):
    paths, _, client = served
    image = random_image(40, 40, seed=5)
    values, meta = _json_map(client, kind, image, method="rollout", layer=layer)
    attentions, _ = reference_attentions(reference_model(paths[kind]), reference_pixels(paths[kind], image))
    expected = _patches(reference_rollout(attentions, layer % attentions.shape[0])[0], PREFIX[kind], meta["grid"])
    np.testing.assert_allclose(values, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("target", [None, 2])
def test_gradient_matches_autograd_over_output_attentions(served, kind, target):
    paths, _, client = served
    image = random_image(32, 48, seed=7)
    fields = {"method": "gradient"} | ({"target": target} if target is not None else {})
    values, meta = _json_map(client, kind, image, **fields)
    model = reference_model(paths[kind])
    attentions, gradients = reference_gradients(model, reference_pixels(paths[kind], image), target)
    expected = _patches(reference_relevance(attentions, gradients, attentions.shape[0] - 1)[0], PREFIX[kind], meta["grid"])
    assert np.abs(expected).max() > 0  # the gradients are not all zero: the comparison means something
    np.testing.assert_allclose(values, expected, atol=TOL, rtol=0)
    assert meta["semantics"] == "relevance"
    if target is None:
        assert meta["prediction"]["index"] == int(model(pixel_values=reference_pixels(paths[kind], image)).logits[0].argmax())


def test_dinov2_without_head_interpolates_positions(make_app, tmp_path):
    """A headless DINOv2 whose position grid (8 x 8) differs from its input grid (4 x 4)."""
    path = build_tiny(tmp_path, "dinov2")
    adapter = load_adapter(path)
    assert not adapter.has_classifier and adapter.info.labels == ()
    client = make_app(adapter).test_client()
    image = random_image(50, 70, seed=19)
    values, meta = _json_map(client, "dinov2", image, method="rollout")
    from transformers import Dinov2Model

    reference = Dinov2Model.from_pretrained(path, attn_implementation="eager").eval()
    attentions, _ = reference_attentions(reference, reference_pixels(path, image))
    np.testing.assert_allclose(values, _patches(reference_rollout(attentions, 1)[0], 1, [4, 4]), atol=TOL, rtol=0)
    assert "prediction" not in meta


def test_non_square_model_input(served):
    """A ViT whose config image_size is 32 x 48: a 4 x 6 grid, read from the input size (never sqrt(N))."""
    paths, adapters, client = served
    image = random_image(60, 90, seed=11)
    values, meta = _json_map(client, "vit-wide", image, method="rollout")
    assert values.shape == (4, 6) and meta["grid"] == [4, 6]
    attentions, _ = reference_attentions(reference_model(paths["vit-wide"]), reference_pixels(paths["vit-wide"], image))
    np.testing.assert_allclose(values, _patches(reference_rollout(attentions, 1)[0], 1, [4, 6]), atol=TOL, rtol=0)
    assert adapters["vit-wide"].info.input_size == (32, 48)
    assert meta["preprocessing"]["placement"] == [0.0, 0.0, 90.0, 60.0]


def test_shortest_edge_keeps_aspect_with_interpolated_positions(served):
    """shortest_edge without a crop: 48 x 64 -> 32 x 42, a 4 x 5 grid; the 2 leftover columns are not covered."""
    paths, _, client = served
    image = random_image(48, 64, seed=13)
    values, meta = _json_map(client, "vit-shortest", image, method="attention", head="mean")
    assert meta["grid"] == [4, 5]
    attentions, _ = reference_attentions(reference_model(paths["vit-shortest"]), reference_pixels(paths["vit-shortest"], image),
                                         interpolate_pos_encoding=True)
    np.testing.assert_allclose(values, _patches(attentions[-1].mean(axis=0)[0], 1, [4, 5]), atol=TOL, rtol=0)
    x0, y0, x1, y1 = meta["preprocessing"]["placement"]
    assert (x0, y0, y1) == (0.0, 0.0, 48.0)
    assert x1 == pytest.approx(40 * 64 / 42, abs=1e-3)


def test_dinov2_crop_placement_and_provenance(served):
    """Shortest edge 40 then a 32 x 32 centre crop: the placement undoes both."""
    _, _, client = served
    _, meta = _json_map(client, "dinov2reg", random_image(48, 64, seed=17))
    resized_w = int(40 * 64 / 48)  # 53
    left, top = (resized_w - 32) // 2, (40 - 32) // 2
    scale_x, scale_y = 64 / resized_w, 48 / 40
    expected = [left * scale_x, top * scale_y, (left + 32) * scale_x, (top + 32) * scale_y]
    assert meta["preprocessing"]["placement"] == pytest.approx(expected, abs=1e-3)
    assert meta["preprocessing"]["crop_box"] == [left, top, left + 32, top + 32]
    assert meta["tokens"] is None or meta["tokens"][:5] == ["[CLS]", "[REG0]", "[REG1]", "[REG2]", "[REG3]"]
    assert meta["patch_size"] == [8, 8]


def test_models_endpoint_describes_vision_models(served):
    _, _, client = served
    models = {m["name"]: m for m in client.get("/models").get_json()["models"]}
    assert models["deit"]["prefix_tokens"] == 2
    assert models["dinov2reg"]["prefix_tokens"] == 5
    assert models["dinov2reg"]["family"] == "dinov2_with_registers"
    assert models["vit"] | {"labels": None} == models["vit"] | {
        "kind": "vision", "layers": 3, "heads": 4, "input_size": [32, 32], "patch_size": 8, "device": "cpu",
        "dtype": "float32", "labels": None}


def test_preprocessing_equals_transformers_processors(served):
    """Our resize/crop/normalise equals transformers' PIL processors on awkward sizes."""
    paths, adapters, _ = served
    for kind in ("vit", "deit", "dinov2reg", "vit-wide"):
        for height, width in ((37, 91), (100, 30), (32, 32)):
            image = random_image(height, width, seed=height + width)
            ours, _ = adapters[kind].preprocessor(image)
            np.testing.assert_allclose(ours, reference_pixels(paths[kind], image)[0].numpy(), atol=2e-6)
