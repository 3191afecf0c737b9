"""The OpenAPI document is valid, matches the code, and holds against the live server."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from app.service.schemas import VisualizeOptions
from tests.live import ROOT, gunicorn_server

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())


def test_spec_is_valid_openapi():
    validate(SPEC)


def test_spec_fields_match_the_request_model():
    options = set(SPEC["components"]["schemas"]["Options"]["properties"]) | {"image"}
    assert options == set(VisualizeOptions.model_fields), options ^ set(VisualizeOptions.model_fields)
    form = set(SPEC["components"]["schemas"]["VisualizeForm"]["properties"])
    assert form == set(VisualizeOptions.model_fields) | {"weights"}


@pytest.mark.live
def test_schemathesis_finds_no_server_error_or_spec_violation(tmp_path: Path):
    with gunicorn_server({"ATTNMAP_BUILTIN_MODELS": "none"}, workers=2) as (base, _):
        command = [str(Path(sys.executable).with_name("schemathesis")), "run", str(ROOT / "openapi.yaml"),
                   "--url", base, "--checks", "all", "--mode", "all",  # positive and negative (invalid) data
                   # Validity that depends on values (a layer beyond this tensor's depth, ragged rows) cannot be
                   # expressed in the schema, so schema-valid requests may rightly get a 422.
                   "--exclude-checks", "positive_data_acceptance", "--max-examples", "40", "--seed", "1",
                   "--request-timeout", "20", "--generation-deterministic", "--report-dir", str(tmp_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def _meta_validator(name: str):
    """A validator of one component schema of openapi.yaml (its $refs resolved within the document)."""
    from openapi_schema_validator import OAS30Validator

    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})


META_REQUESTS = {
    "raw heatmap": {"weights": [[[0.6, 0.4], [0.3, 0.7]]], "tokens": ["a", "b"], "format": "json"},
    "raw rollout row": {"weights": [[[[0.6, 0.4], [0.3, 0.7]]]], "method": "rollout", "query": 0, "format": "json"},
    "raw grid": {"weights": [[[0.6, 0.4], [0.3, 0.7]], [[0.5, 0.5], [0.1, 0.9]]], "view": "grid", "format": "json"},
    "raw trace": {"weights": [[[[0.6, 0.4], [0.3, 0.7]]]], "view": "trace", "query": 1, "key": 0, "format": "json"},
}


@pytest.mark.parametrize("name", list(META_REQUESTS))
def test_json_meta_matches_the_documented_schema(client, name: str) -> None:
    response = client.post("/visualize", json=META_REQUESTS[name])
    assert response.status_code == 200, response.get_json()
    document = response.get_json()
    errors = [error.message for error in _meta_validator("MapDocument").iter_errors(document)]
    assert errors == []


def test_model_meta_and_prediction_match_the_documented_schema() -> None:
    """A vision model's meta carries a prediction, preprocessing and a region mass, all documented."""
    import base64
    import io

    from PIL import Image

    from app.http.factory import create_app

    client = create_app({"builtin_models": ("shapes-vit",)}).test_client()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "model": "shapes-vit", "format": "json",
            "region": [0, 0, 32, 32]}
    document = client.post("/visualize", json=body).get_json()
    meta = document["meta"]
    assert {"prediction", "preprocessing", "region_mass"} <= set(meta)
    assert set(meta["prediction"]) == {"label", "index", "probability", "score_kind", "score", "target", "target_label"}
    assert [error.message for error in _meta_validator("MapDocument").iter_errors(document)] == []
    # The schema is not vacuous: a prediction in the old vision shape fails it.
    broken = {**document, "meta": {**meta, "prediction": {"label": "circle", "index": 0, "score": 0.9}}}
    assert list(_meta_validator("MapDocument").iter_errors(broken))
