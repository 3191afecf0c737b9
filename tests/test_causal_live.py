"""smollm2 under real Gunicorn: the README's "Decoder LLMs" curl commands, run as written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import decode_png, require_binary
from tests.live import ROOT, gunicorn_server

pytestmark = [pytest.mark.live, pytest.mark.slow]


def readme_commands() -> list[str]:
    """The shell commands of the first sh block in the README's "Decoder LLMs" section (continuations joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Decoder LLMs", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block is not None
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_curl_examples_run_against_gunicorn(tmp_path: Path):
    require_binary("curl")
    commands = readme_commands()
    assert len(commands) == 4 and all(c.startswith("curl -sS --fail-with-body") for c in commands)
    with gunicorn_server({"ATTNMAP_BUILTIN_MODELS": "smollm2"}, workers=1) as (base, _process):
        port = base.rsplit(":", 1)[1]
        outputs = []
        for command in commands:
            result = subprocess.run(["bash", "-c", command.replace("localhost:8000", f"127.0.0.1:{port}")], cwd=tmp_path,
                                    capture_output=True, timeout=120, check=False)
            assert result.returncode == 0, (command, result.stdout[:500], result.stderr[:500])
            outputs.append(result.stdout)
    assert decode_png((tmp_path / "map.png").read_bytes()).shape[1] == 512
    assert decode_png((tmp_path / "layers.png").read_bytes()).shape[0] > 300
    assert decode_png((tmp_path / "generated.png").read_bytes()).shape[0] > 300
    document = json.loads(outputs[-1])
    assert document["meta"]["sink_excluded"] is True
    assert document["meta"]["prediction"]["label"] == " Paris"
    assert document["meta"]["key_tokens"][0] == " capital"


def test_a_pass_longer_than_the_worker_timeout_ends_at_the_deadline_and_the_worker_lives(tmp_path: Path):
    """Gunicorn kills a sync worker whose request outlives ``timeout``; the app's deadline holds inside
    the forward pass, so a 4,096-token prompt (about 29 s of forward pass here) against a 5 s deadline
    and a 15 s worker timeout gets the JSON 503 from the same worker, which then serves the next request.
    (The deadline leaves room for the short prompt: about 0.2 s on a quiet machine, seconds on a busy one.)"""
    import requests

    from tests.causal_support import smollm2_adapter

    tokenizer = smollm2_adapter().tokenizer
    sentence = "Attention maps show which earlier words a language model reads when it writes the next one. "
    long_prompt = tokenizer.decode(tokenizer(sentence * 400)["input_ids"][:4096])
    log = tmp_path / "gunicorn.log"
    env = {"ATTNMAP_BUILTIN_MODELS": "smollm2", "ATTNMAP_REQUEST_DEADLINE_S": "5", "ATTNMAP_TIMEOUT": "15"}
    with gunicorn_server(env, workers=1, log_path=log) as (base, _process):
        response = requests.post(f"{base}/visualize", json={"model": "smollm2", "text": long_prompt, "query": "last"},
                                 timeout=60)
        assert response.status_code == 503, response.text[:300]
        assert response.json()["error"]["code"] == "deadline_exceeded" and response.headers["Retry-After"]
        short = requests.post(f"{base}/visualize", json={"model": "smollm2", "text": "The capital of France is",
                                                         "query": "last", "format": "json"}, timeout=60)
        assert short.status_code == 200, short.text[:300]
        assert short.json()["meta"]["prediction"]["label"] == " Paris"
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "WORKER TIMEOUT" not in text and "Traceback" not in text
    assert text.count("Booting worker") == 1  # never killed, never replaced
    served = [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"/visualize"' in line]
    assert [entry["status"] for entry in served] == [503, 200] and len({entry["pid"] for entry in served}) == 1
