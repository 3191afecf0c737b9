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
