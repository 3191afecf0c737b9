"""``attnmap audit`` end to end: a generated shape set, both built-in vision models, a live Gunicorn.

The real server proves the measurement and the gate (the shortcut model fails it, the clean
one passes); a fake server (tests/fake_attnmap.py) does what a real one will not do on cue:
answer 503 with Retry-After for a while, or answer slowly enough to be interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from attnmap_client.cli import main

from tests.builtin_models import AVAILABLE, require_model
from tests.fake_attnmap import Script, fake_server
from tests.helpers import require_binary
from tests.live import CHROMIUM_ARGS, ROOT, WEB_ARTIFACTS, free_port, gunicorn_server
from training.audit_set import generate

pytestmark = [pytest.mark.live, pytest.mark.slow]

ATTNMAP = str(Path(sys.executable).with_name("attnmap"))
SET_SIZE = 32  # 16 marked, 16 unmarked: small enough to be quick, big enough for a distribution
GATE = ["--method", "gradient", "--fail-above", "0.25", "--max-share", "0.1"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate(root, SET_SIZE, seed=11)
    return root


@pytest.fixture(scope="module")
def server():
    require_model("shapes-vit", "shapes-vit-shortcut")
    env = {"ATTNMAP_BUILTIN_MODELS": ",".join(AVAILABLE)}
    with gunicorn_server(env, workers=2) as (base, _process):
        yield base


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _audit(*args: str) -> subprocess.CompletedProcess:
    """The console script, as a CI step would run it."""
    return subprocess.run([ATTNMAP, "audit", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_the_gate_fails_for_the_shortcut_model_and_passes_for_the_clean_one(server, shapes, tmp_path):
    common = ["--server", server, "--images", str(shapes), "--boxes", str(shapes / "corners.csv"), *GATE]
    shortcut = _audit(*common, "--model", "shapes-vit-shortcut", "--out", str(tmp_path / "shortcut"))
    clean = _audit(*common, "--model", "shapes-vit", "--out", str(tmp_path / "clean"))
    assert shortcut.returncode == 1, shortcut.stderr
    assert clean.returncode == 0, clean.stderr
    assert "gate: FAILED for shapes-vit-shortcut" in shortcut.stdout and "gate: passed" in clean.stdout
    assert "/s ETA" in shortcut.stderr  # the progress line: rate and ETA

    bad, good = _summary(tmp_path / "shortcut"), _summary(tmp_path / "clean")
    for summary in (bad, good):
        assert summary["complete"] and len(summary["images"]) == SET_SIZE
        assert all(r["error"] is None for r in summary["images"])
        assert summary["run"]["method"] == "gradient" and summary["run"]["boxes"].endswith("corners.csv")
    corner, clean_corner = bad["aggregate"]["shapes-vit-shortcut"], good["aggregate"]["shapes-vit"]
    # The shortcut model puts much of its relevance on the marker corner of marked images; the clean one does not.
    assert corner["groups"]["marked"]["mean"] > 0.3 > 0.1 > clean_corner["groups"]["marked"]["mean"]
    assert corner["share_above"] > 0.1 and clean_corner["share_above"] == 0
    assert clean_corner["area_share_mean"] == pytest.approx(1 / 64)
    for key in ("mean", "median", "p90"):
        assert 0 <= clean_corner[key] <= 1
    assert bad["gate"]["failed"] == ["shapes-vit-shortcut"] and good["gate"]["failed"] == []
    record = bad["images"][0]
    assert set(record) >= {"path", "region_mass", "area_share", "prediction", "region", "request_id"}


def test_two_models_side_by_side_and_the_report_in_chromium(server, shapes, tmp_path):
    out = tmp_path / "both"
    code = main(["audit", "--server", server, "--model", "shapes-vit-shortcut", "--model", "shapes-vit",
                 "--images", str(shapes), "--boxes", str(shapes / "corners.json"), "--out", str(out),
                 "--thumbnails", "4", "--concurrency", "2", "--quiet", *GATE])
    assert code == 1
    summary = _summary(out)
    assert summary["run"]["models"] == ["shapes-vit-shortcut", "shapes-vit"]
    assert len(summary["images"]) == 2 * SET_SIZE
    assert set(summary["aggregate"]) == {"shapes-vit-shortcut", "shapes-vit"}
    assert summary["gate"]["failed"] == ["shapes-vit-shortcut"]
    html = (out / "report.html").read_text()
    assert "http://" not in html.replace(server, "") and "https://" not in html  # nothing to fetch: offline

    chromium = require_binary("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            page.goto((out / "report.html").as_uri())
            page.wait_for_selector("html[data-ready='true']")
            # 4 worst offenders per model; each shows the original beside both models' overlays.
            assert page.locator("figure.offender").count() == 8
            assert page.locator("img.thumb.original").count() == 8
            assert page.locator("img.thumb.overlay").count() == 16
            sizes = page.eval_on_selector_all("img.thumb", "(images) => images.map((i) => i.naturalWidth)")
            assert all(width > 0 for width in sizes)  # every thumbnail decoded
            assert page.locator("svg.histogram").count() == 2
            assert page.locator(".verdict.fail").count() == 1 and page.locator(".verdict.pass").count() == 1
            assert page.locator("#images tbody tr").count() == SET_SIZE
            header = page.locator("#images th").nth(3)  # the shortcut model's mass
            header.click()
            header.click()
            top = float(page.locator("#images tbody tr").first.locator("td").nth(3).get_attribute("data-v"))
            assert top == pytest.approx(summary["aggregate"]["shapes-vit-shortcut"]["max"])
            assert all(url.startswith(("file://", "data:")) for url in fetched)
            WEB_ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.locator("figure.offender").first.scroll_into_view_if_needed()
            page.screenshot(path=str(WEB_ARTIFACTS / "audit_report.png"), full_page=True)
        finally:
            browser.close()


def test_region_in_fractions_is_scaled_to_each_image(server, shapes, tmp_path):
    squares = tmp_path / "squares"
    shutil.copytree(shapes / "marked" / "square", squares)
    code = main(["audit", "--server", server, "--model", "shapes-vit-shortcut", "--images", str(squares),
                 "--region", "0.875,0,1,0.125", "--method", "gradient", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    summary = _summary(tmp_path / "out")
    assert summary["run"]["region"] == [0.875, 0.0, 1.0, 0.125]
    assert all(r["region"] == [56.0, 0.0, 64.0, 8.0] for r in summary["images"])  # a square's marker corner
    assert summary["aggregate"]["shapes-vit-shortcut"]["median"] > 0.3


def test_an_image_that_fails_to_decode_is_recorded_and_the_run_goes_on(server, shapes, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(shapes / "unmarked" / "circle", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (folder / "not-an-image.jpg").write_bytes(b"plain text with a .jpg name")
    code = main(["audit", "--server", server, "--model", "shapes-vit", "--images", str(folder),
                 "--region", "0,0,0.5,0.5", "--out", str(tmp_path / "out"), "--quiet", "--fail-above", "0.99"])
    assert code == 0
    records = {r["path"]: r for r in _summary(tmp_path / "out")["images"]}
    assert records["broken.png"]["error"]["status"] in (415, 422)
    assert records["not-an-image.jpg"]["error"]["code"] == "unsupported_image_format"
    assert records["not-an-image.jpg"]["error"]["field"] == "image" and records["not-an-image.jpg"]["error"]["request_id"]
    good = [r for r in records.values() if r["error"] is None]
    assert len(good) == len(records) - 2 and all(r["region_mass"] is not None for r in good)
    aggregate = _summary(tmp_path / "out")["aggregate"]["shapes-vit"]
    assert aggregate["errors"] == 2 and aggregate["count"] == len(good)


def test_resume_measures_only_what_is_missing(server, shapes, tmp_path):
    out = tmp_path / "out"
    args = ["audit", "--server", server, "--model", "shapes-vit", "--images", str(shapes), "--boxes",
            str(shapes / "corners.csv"), "--out", str(out), "--quiet"]
    assert main(args) == 0
    first = _summary(out)
    journal = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(journal[:10]) + "\n" + journal[10][:25])  # a torn last line
    assert main([*args, "--resume"]) == 0
    second = _summary(out)
    assert second["run"]["resumed"] == 10 and second["run"]["measured"] == SET_SIZE - 10
    assert [r["path"] for r in second["images"]] == [r["path"] for r in first["images"]]
    assert second["aggregate"]["shapes-vit"]["count"] == SET_SIZE
    # A resume with other settings would mix two audits: refused as a usage error.
    assert main([*args, "--resume", "--method", "rollout"]) == 2


def test_text_audit_per_layer_trace_and_gate(server, tmp_path):
    require_model("minilm")
    lines = tmp_path / "negations.jsonl"
    lines.write_text("\n".join(json.dumps(item) for item in [
        {"text": "the movie was not good at all", "query": "not", "key": "good"},
        {"text": "she did not like the soup", "query": "not", "key": "like", "id": "soup"},
        {"text": "we never saw the ocean", "query": "never", "key": "saw"},
        {"text": "no such token in here", "query": "absent", "key": "here"},
    ]) + "\n")
    common = ["audit", "--server", server, "--model", "minilm", "--text", str(lines), "--quiet"]
    assert main([*common, "--out", str(tmp_path / "strict"), "--fail-below", "0.5"]) == 1
    assert main([*common, "--out", str(tmp_path / "lenient"), "--fail-below", "0.001", "--max-share", "0"]) == 0
    summary = _summary(tmp_path / "lenient")
    assert summary["kind"] == "text" and len(summary["lines"]) == 4
    first = summary["lines"][0]
    assert first["query_token"] == "not" and first["key_token"] == "good"
    assert len(first["per_layer"]) == len(first["layers"]) == 6 and 0 < first["link"] < 1
    assert summary["lines"][1]["id"] == "soup"
    assert summary["lines"][3]["error"]["code"] == "unknown_token" and summary["lines"][3]["error"]["field"] == "query"
    aggregate = summary["aggregate"]["minilm"]
    assert aggregate["count"] == 3 and aggregate["errors"] == 1 and len(aggregate["per_layer"]) == 6
    html = (tmp_path / "lenient" / "report.html").read_text()
    assert html.count('class="layer-plot"') == 1 and html.count('<tr class="weak">') == 3


def test_503_with_retry_after_is_retried_until_served(shapes, tmp_path):
    script = Script(unavailable_first=3, retry_after="1")
    with fake_server(script) as base:
        started = time.monotonic()
        code = main(["audit", "--server", base, "--model", "fake-vit", "--images", str(shapes / "marked" / "cross"),
                     "--region", "0,0,0.5,0.5", "--out", str(tmp_path / "out"), "--quiet", "--concurrency", "2",
                     "--thumbnails", "0"])
    assert code == 0
    summary = _summary(tmp_path / "out")
    assert all(r["error"] is None and r["region_mass"] == 0.25 for r in summary["images"])
    assert summary["run"]["requests_retried"] == 3 and time.monotonic() - started >= 1.0
    assert script.visualize_calls == len(summary["images"]) + 3


def test_several_servers_share_the_work(shapes, tmp_path):
    first, second = Script(), Script()
    with fake_server(first) as one, fake_server(second) as two:
        code = main(["audit", "--server", one, "--server", two, "--model", "fake-vit", "--images", str(shapes),
                     "--region", "0,0,1,1", "--concurrency", "4", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    assert first.visualize_calls > 0 and second.visualize_calls > 0
    assert first.visualize_calls + second.visualize_calls == SET_SIZE + 8  # + the overlays of 8 worst offenders


def test_ctrl_c_leaves_a_valid_partial_summary_and_resume_finishes(shapes, tmp_path):
    out = tmp_path / "out"
    script = Script(delay_s=0.25)
    with fake_server(script) as base:
        args = ["audit", "--server", base, "--model", "fake-vit", "--images", str(shapes), "--region", "0,0,1,1",
                "--out", str(out), "--concurrency", "1"]
        process = subprocess.Popen([ATTNMAP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            journal = out / "results.jsonl"
            if journal.is_file() and len(journal.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "interrupted" in stderr
        partial = _summary(out)
        assert partial["complete"] is False and 3 <= len(partial["images"]) < SET_SIZE
        assert (out / "report.html").read_text().count("partial") >= 1
        script.delay_s = 0.0
        assert main([*args, "--resume", "--quiet"]) == 0
    final = _summary(out)
    assert final["complete"] and len(final["images"]) == SET_SIZE
    assert final["run"]["resumed"] == len(partial["images"])


@pytest.mark.parametrize("extra", [
    [],                                              # neither --region nor --boxes
    ["--region", "0,0,2,1"],                         # not fractions
    ["--region", "0.5,0,0.2,1"],                     # x1 < x0
    ["--region", "0,0,1,1", "--model", "no-such-model"],
    ["--region", "0,0,1,1", "--fail-below", "0.1"],  # a text gate on images
    ["--boxes", "/nonexistent/boxes.csv"],
])
def test_usage_errors_exit_2(shapes, tmp_path, extra):
    with fake_server(Script()) as base:
        model = [] if "--model" in extra else ["--model", "fake-vit"]
        assert main(["audit", "--server", base, *model, "--images", str(shapes), "--out", str(tmp_path), *extra]) == 2


def test_an_unreachable_server_exits_2(shapes, tmp_path):
    code = main(["audit", "--server", f"http://127.0.0.1:{free_port()}", "--model", "m", "--images", str(shapes),
                 "--region", "0,0,1,1", "--out", str(tmp_path), "--wait-ready", "0.5", "--quiet"])
    assert code == 2


def test_the_client_package_imports_without_torch():
    """The client and the CLI run in an environment without torch (or numpy): imports of either fail here."""
    probe = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'numpy', 'flask', 'PIL', 'requests', 'app', 'models'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import attnmap_client, attnmap_client.cli, attnmap_client.audit.report\n"
        "from attnmap_client.cli import main\n"
        "assert main(['--version']) == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'numpy'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd="/", env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]")


def _readme_audit_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## The attention audit")
    return text[start:text.index("\n## ", start + 10)]


def _blocks(section: str, language: str) -> list[str]:
    parts = section.split(f"```{language}\n")[1:]
    return [part.split("```", 1)[0] for part in parts]


def test_the_readme_audit_examples_run_as_written(server, tmp_path):
    """Every command of the README's audit section, on a smaller generated set, with the exit code its comment says."""
    require_model("minilm")
    import shlex

    section = _readme_audit_section()
    commands: list[tuple[str, int | None]] = []
    expected: int | None = None
    for block in _blocks(section, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("#"):
                expected = int(line.split("exit ")[1][0]) if "exit " in line else None
            elif line:
                commands.append((line, expected))
                expected = None
    assert commands[0][0] == "make audit-images" and len(commands) == 5
    images = tmp_path / "audit-images"
    generate(images, SET_SIZE, seed=7)  # what `make audit-images` runs, with fewer images
    for command, exit_code in commands[1:]:
        words = shlex.split(command.replace("http://127.0.0.1:8000", server))
        assert words[0] == ".venv/bin/attnmap"
        words[0] = ATTNMAP
        words = [str(images / w.split("/", 1)[1]) if w.startswith("audit-images/") else str(images) if w == "audit-images"
                 else w for w in words]
        words[words.index("--out") + 1] = str(tmp_path / words[words.index("--out") + 1])
        result = subprocess.run([*words, "--quiet"], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert result.returncode == (0 if exit_code is None else exit_code), (command, result.stdout, result.stderr)

    (python,) = _blocks(section, "python")
    result = subprocess.run([sys.executable, "-c", python.replace("http://127.0.0.1:8000", server)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "422 out_of_range layer" in result.stdout
