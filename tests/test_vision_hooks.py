"""Hook hygiene, early stop, grad modes, load-time self-check and model-side errors of the vision adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import capture
from models.hooks import hooks_on
from models.registry import ModelLoadError, open_model
from tests.vision_support import CPU, build_tiny, load_adapter, png_bytes, post_image, random_image

LEAK_MARKERS = ("Traceback", "boom", "/work", "site-packages", ".py", "CUDA")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision-hooks")
    return {kind: build_tiny(root, kind) for kind in ("vit", "vit-headless", "dinov2reg")}


@pytest.fixture(scope="module")
def served(make_app, paths):
    adapters = {kind: load_adapter(path) for kind, path in paths.items()}
    return adapters, make_app(*adapters.values()).test_client()


IMAGE = png_bytes(random_image(40, 56, seed=1))


def _all_hooks(adapters) -> int:
    """Forward hooks on every model plus capture recordings still open (both must be 0 between requests)."""
    return sum(hooks_on(adapter.model) for adapter in adapters.values()) + capture.open_recordings()


@pytest.mark.parametrize("fields", [
    {"method": "attention", "layer": 0},
    {"method": "attention", "head": 2, "view": "grid"},
    {"method": "rollout", "format": "json"},
    {"method": "gradient"},
    {"method": "gradient", "layer": 1, "format": "json"},
    {"method": "rollout", "view": "heatmap", "annotate": True},
])
def test_no_hooks_remain_after_requests(served, fields):
    adapters, client = served
    assert _all_hooks(adapters) == 0
    for model in ("vit", "dinov2reg"):
        response = post_image(client, IMAGE, model=model, **fields)
        assert response.status_code == 200, response.get_json()
    assert _all_hooks(adapters) == 0


@pytest.mark.parametrize("method", ["attention", "rollout", "gradient"])
def test_error_mid_forward_leaves_no_hooks_and_no_leak(served, monkeypatch, method):
    adapters, client = served
    adapter = adapters["vit"]
    module = adapter.attention_modules[2]

    def boom(*args, **kwargs):
        raise RuntimeError("boom at /work/main/models/secret.py")

    with monkeypatch.context() as patch:
        patch.setattr(module, "forward", boom)
        response = post_image(client, IMAGE, model="vit", method=method, layer=-1)
        assert response.status_code == 500
        assert response.mimetype == "application/json"
        assert response.get_json()["error"]["code"] == "internal_error"
        assert not any(marker in response.get_data(as_text=True) for marker in LEAK_MARKERS)
        assert _all_hooks(adapters) == 0
    assert post_image(client, IMAGE, model="vit", method=method).status_code == 200
    assert _all_hooks(adapters) == 0


def test_out_of_memory_mid_forward_is_503_and_the_worker_keeps_serving(served, monkeypatch):
    adapters, client = served
    adapter = adapters["dinov2reg"]

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(adapter.attention_modules[1], "forward", oom)
        response = post_image(client, IMAGE, model="dinov2reg", method="gradient")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["error"]["code"] == "gpu_out_of_memory"
    assert "CUDA out of memory" not in response.get_data(as_text=True)
    assert _all_hooks(adapters) == 0
    assert post_image(client, IMAGE, model="dinov2reg", method="gradient").status_code == 200


def test_attention_stops_after_the_last_needed_layer(served, monkeypatch):
    adapters, client = served
    adapter = adapters["vit"]
    calls = {"count": 0}
    last = adapter.attention_modules[2]
    original = last.forward

    def counting(*args, **kwargs):
        calls["count"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(last, "forward", counting)
    early = post_image(client, IMAGE, model="vit", method="attention", layer=0, format="json")
    assert early.status_code == 200 and calls["count"] == 0
    assert "prediction" not in early.get_json()["meta"]  # the classifier never ran
    full = post_image(client, IMAGE, model="vit", method="attention", layer=-1, format="json")
    assert calls["count"] == 1
    assert set(full.get_json()["meta"]["prediction"]) == {"label", "index", "probability", "score_kind", "score", "target", "target_label"}


def test_inference_mode_except_for_gradient(served, monkeypatch):
    adapters, client = served
    module = adapters["vit"].attention_modules[0]
    original = module.forward
    seen = []

    def recording(*args, **kwargs):
        seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "forward", recording)
    assert post_image(client, IMAGE, model="vit", method="rollout").status_code == 200
    assert post_image(client, IMAGE, model="vit", method="gradient").status_code == 200
    assert seen == [(True, False), (False, True)]


def test_gradient_needs_a_classifier_and_a_valid_target(served):
    _, client = served
    response = post_image(client, IMAGE, model="vit-headless", method="gradient")
    assert response.status_code == 422
    assert response.get_json()["error"] == {"code": "no_classifier", "field": "method",
                                            "message": response.get_json()["error"]["message"]}
    response = post_image(client, IMAGE, model="vit", method="gradient", target=3)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "out_of_range" and response.get_json()["error"]["field"] == "target"
    headless = post_image(client, IMAGE, model="vit-headless", method="rollout", format="json")
    assert headless.status_code == 200 and "prediction" not in headless.get_json()["meta"]


def test_attention_budget_uses_the_token_estimate(make_app, paths):
    client = make_app(load_adapter(paths["vit"]), limits={"attention_budget_bytes": 1000}).test_client()
    response = post_image(client, IMAGE, model="vit", method="rollout")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "selection_too_large"


def test_a_model_without_attention_weights_is_refused_at_load(paths):

    with pytest.raises(ModelLoadError, match="self-check"):
        open_model("forced-sdpa", paths["vit"], device=CPU, dtype=torch.float32, attn_implementation="sdpa")


def test_operator_config_loads_vision_models(make_app, paths, tmp_path):
    config = tmp_path / "models.toml"
    config.write_text(f'[models.my-vit]\npath = "{paths["dinov2reg"]}"\ndescription = "tiny test model"\n')
    client = make_app(models_config=str(config)).test_client()
    listed = client.get("/models").get_json()["models"]
    assert [(m["name"], m["kind"], m["prefix_tokens"], m["patch_size"]) for m in listed] == [("my-vit", "vision", 5, 8)]
    response = post_image(client, IMAGE, transport="multipart", model="my-vit", method="rollout", format="json")
    assert response.status_code == 200
    assert np.asarray(response.get_json()["values"]).shape == (4, 4)


def test_text_input_to_a_vision_model_is_refused(served):
    _, client = served
    response = client.post("/visualize", json={"model": "vit", "text": "hello"})
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "wrong_input_kind"


def test_concurrent_captures_do_not_mix(served):
    """Threads sharing one adapter get exactly the maps a sequential run gives."""
    from concurrent.futures import ThreadPoolExecutor

    from models.adapter import CaptureRequest, ImageInput

    adapter = served[0]["vit"]
    images = [ImageInput(random_image(32, 32, seed=s)) for s in range(8)]
    request = CaptureRequest(layers=(0, 1, 2))
    sequential = [adapter.capture(image, request).stack.weights for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda image: adapter.capture(image, request).stack.weights, images * 3))
    for index, weights in enumerate(parallel):
        np.testing.assert_array_equal(weights, sequential[index % len(images)])
    assert _all_hooks(served[0]) == 0


def test_half_precision_plumbing(paths):
    """float16 weights (what a GPU worker with half precision gets) still yield float32 stacks."""
    from models.adapter import CaptureRequest, ImageInput

    half = open_model("half", paths["dinov2reg"], device=CPU, dtype=torch.float16)
    full = load_adapter(paths["dinov2reg"])
    assert half.info.dtype == "float16"
    image = ImageInput(random_image(40, 40, seed=4))
    for request in (CaptureRequest(layers=(0, 1, 2)), CaptureRequest(layers=(0, 1, 2), gradient=True)):
        low, high = half.capture(image, request), full.capture(image, request)
        assert low.stack.weights.dtype == np.float32
        np.testing.assert_allclose(low.stack.weights, high.stack.weights, atol=2e-2)
        if request.gradient:
            assert low.stack.gradients is not None and low.stack.gradients.dtype == np.float32


@pytest.mark.parametrize("fields", [{"method": "attention", "layer": 0}, {"method": "rollout"}, {"method": "gradient"}])
def test_requests_run_on_the_fused_path_never_eager(served, fields):
    """Every layer runs transformers' SDPA through the capture engine; eager attention is never called."""
    adapters, client = served
    adapter = adapters["vit"]
    assert adapter.model.config._attn_implementation == capture.ATTENTION_NAME
    with capture.count_eager_calls(adapter.model) as eager:
        response = post_image(client, IMAGE, model="vit", **fields)
    assert response.status_code == 200
    assert eager.count == 0
