"""The OpenAPI document is valid, matches the code, and holds against the live server."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openapi_spec_validator import validate

from app.service.schemas import REGION_LIMIT, VisualizeOptions
from tests.error_codes import emitted_codes
from tests.live import ROOT, gunicorn_server

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())


def test_spec_is_valid_openapi():
    validate(SPEC)


def test_spec_fields_match_the_request_model():
    options = set(SPEC["components"]["schemas"]["Options"]["properties"]) | {"image"}
    assert options == set(VisualizeOptions.model_fields), options ^ set(VisualizeOptions.model_fields)
    form = set(SPEC["components"]["schemas"]["VisualizeForm"]["properties"])
    assert form == set(VisualizeOptions.model_fields) | {"weights"}


# The table in the Error schema's description: | `code` | 413, 422 | when |
_CODE_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| ([0-9x, ]+) \| .+ \|$", re.MULTILINE)


def _documented_codes() -> dict[str, set[str]]:
    error = SPEC["components"]["schemas"]["Error"]
    table = {code: {s.strip() for s in statuses.split(",")} for code, statuses in _CODE_ROW.findall(error["description"])}
    enum = error["properties"]["error"]["properties"]["code"]["enum"]
    assert len(enum) == len(set(enum)), "a code is listed twice in the enum"
    assert set(enum) == set(table), {"enum only": set(enum) - set(table), "table only": set(table) - set(enum)}
    return table


def _documents(statuses: set[str], status: int) -> bool:
    """Whether a documented status list (``413, 422`` or a class such as ``4xx``) covers ``status``."""
    return str(status) in statuses or f"{str(status)[0]}xx" in statuses


def test_every_error_code_the_service_emits_is_documented():
    """Every code= of the error tree in app/ and models/, every default_code raised, the HTTP boundary,
    the Gunicorn worker and nginx: each is in openapi.yaml's list, and nothing listed is dead."""
    documented = _documented_codes()
    emitted = emitted_codes()
    assert set(emitted) - set(documented) == set(), "emitted but not documented in openapi.yaml"
    assert set(documented) - set(emitted) == set(), "documented in openapi.yaml but nothing emits it"


def test_each_error_code_is_documented_with_the_status_it_is_answered_with():
    documented = _documented_codes()
    wrong = {code: sorted(s for s in statuses if not _documents(documented[code], s))
             for code, statuses in emitted_codes().items()}
    assert {code: statuses for code, statuses in wrong.items() if statuses} == {}


def test_the_code_walk_sees_the_codes_added_for_hostile_input():
    """The walk is not vacuous: codes from each kind of emitter are found, with their statuses."""
    emitted = emitted_codes()
    for code, status in {"not_applicable": 422, "negative_attention": 422, "numeric_overflow": 422,
                         "corrupt_image": 422, "gradients_not_captured": 500, "deadline_exceeded": 503,
                         "invalid_value": 422, "malformed_framing": 400, "method_not_allowed": 405,
                         "malformed_header": 400, "upstream_unavailable": 504, "too_many_tokens": 422}.items():
        assert status in emitted.get(code, set()), (code, emitted.get(code))


def test_region_bounds_are_documented_as_the_schema_enforces_them(client):
    items = SPEC["components"]["schemas"]["Options"]["properties"]["region"]["items"]
    assert (items["minimum"], items["maximum"]) == (-REGION_LIMIT, REGION_LIMIT)
    base = {"weights": [[[0.6, 0.4], [0.3, 0.7]]]}
    # Through the API: the documented bound is the enforced one (a raw request: the bound is checked
    # before the region is found not to apply).
    beyond = client.post("/visualize", json={**base, "region": [0, 0, REGION_LIMIT * 1.5, 10]}).get_json()
    assert (beyond["error"]["code"], beyond["error"]["field"]) == ("out_of_range", "region")
    infinite = client.post("/visualize", data=b'{"weights": [[1]], "region": [0, 0, 1e400, 1]}',
                           content_type="application/json").get_json()
    assert infinite["error"]["code"] == "invalid_value"


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


def test_model_meta_and_prediction_match_the_documented_schema(shapes_client) -> None:
    """A vision model's meta carries a prediction, preprocessing and a region mass, all documented."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "model": "shapes-vit", "format": "json",
            "region": [0, 0, 32, 32]}
    document = shapes_client.post("/visualize", json=body).get_json()
    meta = document["meta"]
    assert {"prediction", "preprocessing", "region_mass"} <= set(meta)
    assert set(meta["prediction"]) == {"label", "index", "probability", "score_kind", "score", "target", "target_label"}
    assert [error.message for error in _meta_validator("MapDocument").iter_errors(document)] == []
    # The schema is not vacuous: a prediction in the old vision shape fails it.
    broken = {**document, "meta": {**meta, "prediction": {"label": "circle", "index": 0, "score": 0.9}}}
    assert list(_meta_validator("MapDocument").iter_errors(broken))
