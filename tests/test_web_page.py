"""The web page at ``GET /``.

Unit tests go through Flask's test client: the page, its security headers, its assets, and the
``/examples`` allow-list. End-to-end tests drive headless Chromium (Playwright for Python with
the system browser) against the app under Gunicorn, with the built-in models where their files
exist; screenshots land in ``artifacts/web/``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from app.http.web import CONTENT_SECURITY_POLICY
from models.adapter import ModelAdapter, ModelInfo
from models.registry import ModelRegistry
from tests.builtin_models import AVAILABLE, EXAMPLES_DIR, require_model
from tests.helpers import require_binary
from tests.live import CHROMIUM_ARGS, ROOT, WEB_ARTIFACTS, gunicorn_server

STATIC = ROOT / "app" / "static"

# ---------------------------------------------------------------------------------------------
# The page through the test client


class _References(HTMLParser):
    """Collects script/link/img references and anything inline that the CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.style_elements = 0
        self.style_attributes: list[str] = []
        self.handler_attributes: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            if named.get("src"):
                self.urls.append(str(named["src"]))
            else:
                self._in_script_without_src = True
        if tag == "style":
            self.style_elements += 1
        if tag == "link" and named.get("href"):
            self.urls.append(str(named["href"]))
        if tag == "img" and named.get("src"):
            self.urls.append(str(named["src"]))
        for name, _ in attrs:
            if name == "style":
                self.style_attributes.append(tag)
            if name.startswith("on"):
                self.handler_attributes.append(f"{tag}[{name}]")

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script_without_src = False


def _page_references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def test_page_is_served_with_its_security_headers(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = {part.strip().split(" ", 1)[0]: part.strip().split(" ", 1)[1] for part in csp.split(";")}
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' blob: data:"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert b"attnmap" in response.data


def test_page_has_nothing_inline_and_only_relative_references(client):
    html = client.get("/").get_data(as_text=True)
    refs = _page_references(html)
    assert refs.inline_scripts == 0
    assert refs.style_elements == 0
    assert refs.style_attributes == []
    assert refs.handler_attributes == []
    assert refs.urls, "the page references no assets"
    for url in refs.urls:
        # Relative to the page: works at the root and under a proxy's path prefix alike.
        assert not url.startswith(("/", "http:", "https:", "//")), url


def _module_imports(source: str) -> list[str]:
    return re.findall(r"""^\s*(?:import|export)\b[^;]*?from\s+["'](\.[^"']+)["']""", source, flags=re.MULTILINE | re.DOTALL)


def test_every_asset_and_module_is_served(client):
    html = client.get("/").get_data(as_text=True)
    pending = [f"/{url}" for url in _page_references(html).urls]
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-cache", path
        if path.endswith(".js"):
            assert response.mimetype in {"text/javascript", "application/javascript"}, path
            base = path.rsplit("/", 1)[0]
            for spec in _module_imports(response.get_data(as_text=True)):
                parts = f"{base}/{spec}".split("/")
                resolved: list[str] = []
                for part in parts:
                    if part == "..":
                        resolved.pop()
                    elif part not in (".", ""):
                        resolved.append(part)
                pending.append("/" + "/".join(resolved))
        elif path.endswith(".css"):
            assert response.mimetype == "text/css"
    # Every JS module on disk is reachable from the page (no dead files, no missing imports).
    on_disk = {f"/assets/{p.relative_to(STATIC).as_posix()}" for p in STATIC.rglob("*.js")}
    assert on_disk <= seen


def test_scripts_call_the_api_by_relative_urls_only():
    for path in STATIC.rglob("*.js"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"""["'`]/(visualize|models|examples|assets)\b""", source), path
        assert "http://" not in source and "https://" not in source, path
        assert "innerHTML" not in source and "eval(" not in source, path


def test_static_assets_do_not_escape_their_folder(client):
    for path in ("/assets/../web.py", "/assets/%2e%2e/web.py", "/assets/..%2fweb.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "application/json", path


def _png(color: str = "#e4572e", size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """An examples folder with two images, annotations, and files that must never be served."""
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "circle.png").write_bytes(_png())
    (folder / "square-2.jpg").write_bytes(_png("#17bebb"))
    (folder / "tri.webp").write_bytes(_png("#ffc914"))
    (folder / "boxes.json").write_text(json.dumps({
        "circle.png": {"box": [4, 5, 30, 31], "label": "circle", "marker": False, "secret": "/etc/passwd"},
        "tri": [0, 1, 2, 3],
        "square-2.jpg": {"bbox": [1, 2, 3, 4], "marker_box": [40, 0, 48, 8], "marker": "not a bool or short text" * 20},
    }))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(_png())
    (folder / "has space.png").write_bytes(_png())
    (tmp_path / "outside.png").write_bytes(_png())
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    return folder


@pytest.fixture
def examples_client(app, examples):
    app.config["ATTNMAP_EXAMPLES_DIR"] = str(examples)
    return app.test_client()


def test_examples_lists_images_sentences_and_boxes(examples_client):
    response = examples_client.get("/examples")
    assert response.status_code == 200
    body = response.get_json()
    assert [image["name"] for image in body["images"]] == ["circle.png", "square-2.jpg", "tri.webp"]
    circle = body["images"][0]
    assert circle == {"name": "circle.png", "url": "examples/circle.png", "box": [4.0, 5.0, 30.0, 31.0],
                      "label": "circle", "marker": False}
    assert body["images"][1] == {"name": "square-2.jpg", "url": "examples/square-2.jpg", "box": [1.0, 2.0, 3.0, 4.0],
                                 "marker_box": [40.0, 0.0, 48.0, 8.0]}
    assert body["images"][2]["box"] == [0.0, 1.0, 2.0, 3.0]  # a bare list, keyed by the file's stem
    assert "He never smoked." in body["sentences"]
    assert body["comparisons"] == []  # the app fixture loads no models


def test_example_image_is_served_by_name(examples_client, examples):
    response = examples_client.get("/examples/circle.png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data == (examples / "circle.png").read_bytes()
    assert examples_client.get("/examples/square-2.jpg").mimetype == "image/jpeg"
    assert examples_client.get("/examples/tri.webp").mimetype == "image/webp"


@pytest.mark.parametrize("name", [
    "..", "../web.py", "..%2F..%2Fopenapi.yaml", "%2e%2e%2fapp%2fweb.py", "..%5cweb.py", "boxes.json", "notes.txt",
    ".hidden.png", "has%20space.png", "link.png", "missing.png", "circle.png%00.txt", "CIRCLE.PNG", "/etc/passwd",
])
def test_examples_refuses_every_name_outside_the_listing(examples_client, name):
    response = examples_client.get(f"/examples/{name}")
    assert response.status_code == 404, name
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] in {"unknown_example", "not_found"}
    assert "/" not in body["error"]["message"].replace("GET /examples", "")


def test_examples_without_a_folder_lists_only_sentences(app, tmp_path):
    app.config["ATTNMAP_EXAMPLES_DIR"] = str(tmp_path / "absent")
    body = app.test_client().get("/examples").get_json()
    assert body["images"] == []
    assert body["sentences"][0] == "He never smoked."
    assert app.test_client().get("/examples/circle.png").status_code == 404


class _InfoOnly(ModelAdapter):
    """A loaded-model stand-in that only describes itself (enough for /models and /examples)."""

    def __init__(self, name: str) -> None:
        self.info = ModelInfo(name=name, kind="vision", family="vit", layers=2, heads=2, device="cpu", dtype="float32")

    def capture(self, inputs: Any, request: Any) -> Any:
        raise NotImplementedError

    def estimate_tokens(self, inputs: Any, request: Any) -> int:
        raise NotImplementedError


@pytest.mark.parametrize(("loaded", "offered"), [
    (("shapes-vit", "shapes-vit-shortcut"), True),
    (("shapes-vit",), False),
])
def test_shortcut_comparison_is_offered_only_when_both_models_are_loaded(make_app, loaded, offered):
    registry = ModelRegistry(_InfoOnly(name) for name in loaded)
    comparisons = make_app(registry=registry).test_client().get("/examples").get_json()["comparisons"]
    if offered:
        assert comparisons[0]["models"] == ["shapes-vit", "shapes-vit-shortcut"]
        assert comparisons[0]["labels"] == ["clean", "shortcut"]
        assert comparisons[0]["method"] == "gradient"  # where the two models differ most
    else:
        assert comparisons == []


@pytest.mark.parametrize("app", [{"proxy_hops": 1}], indirect=True)
def test_page_and_examples_work_under_a_proxy_prefix(client):
    headers = {"X-Forwarded-Prefix": "/attnmap", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "example.org",
               "X-Forwarded-Proto": "https"}
    page = client.get("/", headers=headers)
    assert page.status_code == 200 and page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert client.get("/assets/app.js", headers=headers).status_code == 200
    assert client.get("/examples", headers=headers).get_json()["images"][0:0] == []


# ---------------------------------------------------------------------------------------------
# End to end: headless Chromium against Gunicorn

@pytest.fixture(scope="module")
def chromium_path() -> str:
    return require_binary("chromium")


@pytest.fixture(scope="module")
def server(chromium_path):
    """Gunicorn with every built-in model whose files exist (none: raw weights only)."""
    WEB_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {"ATTNMAP_BUILTIN_MODELS": ",".join(AVAILABLE) or "none"}
    with gunicorn_server(env, workers=2, log_path=WEB_ARTIFACTS / "gunicorn.log") as (base, _process):
        yield base


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class PageProblems:
    """Uncaught exceptions and CSP violations seen by a page; either fails the test."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(f"csp: {message.text}")


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    problems = PageProblems(tab)
    yield tab
    context.close()
    assert problems.errors == []


def _open(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready='true']")


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(WEB_ARTIFACTS / f"{name}.png"), full_page=True)


# Function expressions, not bare strings: the page's CSP forbids string evaluation.
RENDERED = """(count) => {
  const images = [...document.querySelectorAll('.map-img')];
  return images.length === count && document.getElementById('progress').hidden
    && images.every((img) => img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:'));
}"""


def _wait_rendered(page: Any, count: int = 1) -> list[str]:
    page.wait_for_function(RENDERED, arg=count)
    return page.eval_on_selector_all(".map-img", "(images) => images.map((img) => img.src)")


def _wait_new_image(page: Any, previous: str) -> str:
    page.wait_for_function("""(old) => {
      const img = document.querySelector('.map-img');
      return img.src !== old && img.complete && img.naturalWidth > 0 && document.getElementById('progress').hidden;
    }""", arg=previous)
    return page.eval_on_selector(".map-img", "(img) => img.src")


def _hover_cell(page: Any, row: float, col: float, rows: int, cols: int, selector: str = ".map-img") -> str:
    target = page.locator(selector).first
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    page.mouse.move(box["x"] + box["width"] * (col + 0.5) / cols, box["y"] + box["height"] * (row + 0.5) / rows)
    page.wait_for_function("() => document.querySelector('.readout-value') !== null")
    return page.locator(".readout").first.inner_text()


def _readout_value(text: str) -> float:
    return float(text.split()[-1])


def _replay_curl(command: str, files: dict[str, Path]) -> requests.Response:
    """Send what a curl command from the page describes (the options the page emits), with requests.

    ``files`` maps the file names the command reads (``@name``) to paths on this machine.
    """
    import shlex

    words = shlex.split(command.replace("\\\n", " "))
    assert words[0] == "curl"
    headers: dict[str, str] = {}
    form: dict[str, tuple[None, str]] = {}
    uploads: dict[str, tuple[str, bytes]] = {}
    data: bytes | None = None
    url = words[-1]
    index = 1
    while index < len(words) - 1:
        option = words[index]
        value = words[index + 1] if index + 1 < len(words) - 1 else ""
        if option in {"-sS", "--fail-with-body"}:
            index += 1
            continue
        if option == "-o":
            pass
        elif option == "-H":
            name, _, text = value.partition(":")
            headers[name.strip()] = text.strip()
        elif option == "--data-binary":
            data = files[value[1:]].read_bytes() if value.startswith("@") else value.encode()
        elif option == "--form-string":
            name, _, text = value.partition("=")
            form[name] = (None, text)
        elif option == "-F":
            name, _, text = value.partition("=@")
            uploads[name] = (text, files[text].read_bytes())
        else:
            raise AssertionError(f"unexpected curl option {option!r}")
        index += 2
    if data is not None:
        return requests.post(url, data=data, headers=headers, timeout=60)
    return requests.post(url, files={**form, **uploads}, headers=headers, timeout=60)


def _downloaded_png(page: Any, name: str, index: int = 0) -> bytes:
    with page.expect_download() as download:
        page.locator(".download").nth(index).click()
    path = WEB_ARTIFACTS / name
    download.value.save_as(path)
    return path.read_bytes()


@pytest.mark.live
def test_raw_weights_end_to_end(page, server):
    _open(page, f"{server}/")
    _shot(page, "01-empty")
    page.select_option("#model", "raw-weights")
    page.click("#sample-weights")
    first = _wait_rendered(page)[0]
    assert page.eval_on_selector(".map-img", "(img) => img.naturalWidth") == 512
    assert page.input_value("#layer") == "-1" and page.get_attribute("#layer", "max") == "2"
    assert page.locator("#head option").count() == 3 + 4  # fusions + 4 heads from the pasted shape
    assert page.locator(".axis-x .axis-token").all_inner_texts() == ["the", "cat", "sat", "on", "the", "mat", "."]

    # Hover reads the value of the cell from the parallel format=json answer.
    text = _hover_cell(page, 2, 1, 7, 7)
    assert "“sat” → “cat”" in text
    document = requests.post(f"{server}/visualize", json={"weights": json.loads(page.input_value("#weights-text")),
                                                          "format": "json"}, timeout=10).json()
    assert math.isclose(_readout_value(text), document["values"][2][1], rel_tol=1e-3)

    # The keyboard moves a cursor over the cells (starting at the top left).
    page.mouse.move(0, 0)
    page.focus(".map-frame")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    assert "“cat” → “cat”" in page.locator(".readout").inner_text()

    # A new layer gives a new image.
    page.fill("#layer", "0")
    second = _wait_new_image(page, first)
    assert second != first
    assert "0 of 3" in page.locator(".meta").inner_text()

    # Download the PNG; the curl command (reading the long JSON body from the request.json
    # offered next to it) gives the same bytes.
    png = _downloaded_png(page, "download-raw.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    curl = page.inner_text("#curl")
    assert curl.startswith("curl ") and f"{server}/visualize" in curl and "--data-binary @request.json" in curl
    with page.expect_download() as body_download:
        page.click("#curl-body")
    body_path = Path(body_download.value.path())
    body = json.loads(body_path.read_text())
    assert body["layer"] == 0 and body["tokens"][1] == "cat" and len(body["weights"]) == 3
    replayed = _replay_curl(curl, {"request.json": body_path})
    assert replayed.status_code == 200 and replayed.content == png
    _shot(page, "02-raw-weights")


@pytest.mark.live
def test_validation_error_shows_next_to_its_field(page, server):
    _open(page, f"{server}/")
    page.select_option("#model", "raw-weights")
    page.click("#sample-weights")
    _wait_rendered(page)
    page.fill("#layer", "99")
    page.wait_for_selector("#layer-error:not([hidden])")
    message = page.inner_text("#layer-error")
    assert "layer must be in [-3, 2]" in message and "99" in message
    assert page.get_attribute("#layer", "aria-invalid") == "true"
    assert page.is_hidden("#alert")
    # The error sits inside the layer field, right under its input.
    field = page.locator(".field[data-field='layer']")
    assert field.locator("#layer-error").count() == 1
    _shot(page, "03-validation-error")

    # Fixing the value clears the error.
    page.fill("#layer", "1")
    page.wait_for_selector("#layer-error", state="hidden")
    _wait_rendered(page)
    assert page.get_attribute("#layer", "aria-invalid") is None

    # An error in the source box shows there, checked on the page before any request.
    page.fill("#weights-text", "[[1, 2], [3]]")
    page.wait_for_selector("#weights-error:not([hidden])")
    assert "ragged" in page.inner_text("#weights-error")


@pytest.mark.live
def test_request_in_flight_shows_progress_and_can_be_cancelled(page, server):
    _open(page, f"{server}/")
    page.select_option("#model", "raw-weights")
    held: list[Any] = []
    page.route("**/visualize", lambda route: held.append(route))  # hold every render request
    page.click("#sample-weights")
    page.wait_for_selector("#progress:not([hidden])")
    assert "Rendering raw weights" in page.inner_text("#progress-text")
    assert page.get_attribute("#result", "aria-busy") == "true"
    _shot(page, "04-in-flight")
    page.click("#cancel")
    page.wait_for_selector("#progress", state="hidden")
    assert "Cancelled" in page.inner_text("#announcer")
    assert page.is_visible("#empty")  # nothing had been rendered yet
    page.unroute("**/visualize")
    assert len(held) == 2  # the PNG and its parallel format=json request


@pytest.mark.live
def test_keyboard_reaches_the_controls_with_visible_focus(page, server):
    _open(page, f"{server}/")
    reached = []
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.id || document.activeElement.className"))
        if reached[-1] == "model":
            break
    assert reached[0] == "skip-link"
    assert "model" in reached
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.labels?.[0]?.textContent?.trim()")


@pytest.mark.live
def test_phone_width_has_no_horizontal_overflow(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    tab = context.new_page()
    problems = PageProblems(tab)
    try:
        _open(tab, f"{server}/")
        tab.select_option("#model", "raw-weights")
        tab.click("#sample-weights")
        _wait_rendered(tab)
        if "minilm" in AVAILABLE:
            tab.select_option("#model", "minilm")
            tab.fill("#text", "The animal didn't cross the street because it was too tired.")
            tab.click("#render")
            tab.wait_for_function("() => document.querySelector('.axis-x .axis-token')?.textContent === '[CLS]'")
            _wait_rendered(tab)
        widths = tab.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1], f"page is {widths[0]} px wide in a {widths[1]} px viewport"
        wide = tab.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                           && !e.closest('.curl') && e.getClientRects().length)
            .map((e) => e.tagName + '.' + e.className)""")
        assert wide == []
        tab.screenshot(path=str(WEB_ARTIFACTS / "05-phone.png"), full_page=True)
    finally:
        context.close()
    assert problems.errors == []


@pytest.mark.live
def test_page_works_under_a_path_prefix(browser, server):
    """A proxy serving the app at /attnmap/ (prefix stripped): no request may leave the prefix."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    escaped: list[str] = []

    def proxy(route: Any) -> None:
        url = route.request.url
        path = url[len(server):]
        if not path.startswith("/attnmap/"):
            escaped.append(path)
            route.abort()
            return
        response = route.fetch(url=server + path[len("/attnmap"):])
        route.fulfill(response=response)

    context.route(f"{server}/**", proxy)
    tab = context.new_page()
    problems = PageProblems(tab)
    try:
        _open(tab, f"{server}/attnmap/")
        tab.select_option("#model", "raw-weights")
        tab.click("#sample-weights")
        _wait_rendered(tab)
        assert f"{server}/attnmap/visualize" in tab.inner_text("#curl")
    finally:
        context.close()
    assert escaped == []
    assert problems.errors == []


def _example_image(tmp_path: Path) -> Path:
    """A built-in example picture, or a drawn one when the examples folder is absent."""
    if EXAMPLES_DIR.is_dir():
        images = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
        if images:
            return images[0]
    path = tmp_path / "drawn.png"
    pixels = np.full((96, 96, 3), 240, np.uint8)
    pixels[30:70, 25:65] = (228, 87, 46)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.live
def test_vision_model_end_to_end(page, server, tmp_path):
    require_model("shapes-vit")
    _open(page, f"{server}/")
    page.select_option("#model", "shapes-vit")
    assert page.input_value("#view") == "overlay"
    page.set_input_files("#image-file", str(_example_image(tmp_path)))
    first = _wait_rendered(page)[0]
    assert page.eval_on_selector(".map-img", "(img) => img.naturalWidth") > 0
    assert "Prediction" in page.inner_text(".meta")
    layers = int(page.get_attribute("#layer", "max")) + 1
    text = _hover_cell(page, 0, 0, 1, 1)  # the middle of the picture
    assert "patch row" in text
    page.fill("#layer", "0")
    second = _wait_new_image(page, first)
    assert second != first and f"0 of {layers}" in page.inner_text(".meta")
    _shot(page, "06-vision-overlay")
    page.fill("#layer", str(layers + 5))
    page.wait_for_selector("#layer-error:not([hidden])")
    assert f"[-{layers}, {layers - 1}]" in page.inner_text("#layer-error")
    _shot(page, "07-vision-error")

    # Dropping a picture on the drop zone renders it.
    page.fill("#layer", "-1")
    third = _wait_new_image(page, second)
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), "#17bebb").save(buffer, format="PNG")
    transfer = page.evaluate_handle("""(b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
      return transfer;
    }""", base64.b64encode(buffer.getvalue()).decode())
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    _wait_new_image(page, third)
    assert page.eval_on_selector(".map-img", "(img) => [img.naturalWidth, img.naturalHeight]") == [80, 60]
    assert "dropped.png" in page.inner_text("#image-name")


@pytest.mark.live
def test_shortcut_demo_side_by_side(page, server, tmp_path):
    require_model("shapes-vit", "shapes-vit-shortcut")
    _open(page, f"{server}/")
    demo_button = page.get_by_role("button", name=re.compile("Shortcut demo"))
    if demo_button.count():
        demo_button.click()
    else:  # no example images on this machine: the same demo from an uploaded picture
        page.select_option("#model", "shapes-vit")
        page.check("#compare")
        page.set_input_files("#image-file", str(_example_image(tmp_path)))
    sources = _wait_rendered(page, count=2)
    assert len(set(sources)) == 2
    titles = page.locator(".map-head").all_inner_texts()
    assert any("shapes-vit" in t and "CLEAN" in t.upper() for t in titles)
    assert any("shapes-vit-shortcut" in t and "SHORTCUT" in t.upper() for t in titles)
    assert page.is_checked("#compare")
    assert page.inner_text("#curl").count("curl ") == 2
    if demo_button.count():
        assert page.input_value("#method") == "gradient"
        assert page.inner_text("#curl").count("method=gradient") == 2
    _shot(page, "08-shortcut-demo")


@pytest.mark.live
def test_text_model_reads_a_value_by_hovering(page, server):
    require_model("minilm")
    _open(page, f"{server}/")
    page.select_option("#model", "minilm")
    page.get_by_role("button", name="He never smoked.").first.click()
    _wait_rendered(page)
    tokens = page.locator(".axis-x .axis-token").all_inner_texts()
    assert tokens == ["[CLS]", "he", "never", "smoked", ".", "[SEP]"]
    text = _hover_cell(page, 1, 2, len(tokens), len(tokens))
    assert "“he” → “never”" in text
    document = requests.post(f"{server}/visualize", json={"model": "minilm", "text": "He never smoked.", "format": "json"},
                             timeout=30).json()
    assert math.isclose(_readout_value(text), document["values"][1][2], rel_tol=1e-3)
    assert _replay_curl(page.inner_text("#curl"), {}).content == _downloaded_png(page, "download-text.png")
    # One query token: a strip with the keys along it.
    page.select_option("#query", "2")
    page.wait_for_function("() => document.querySelector('.meta').innerText.includes('“never”')")
    _wait_rendered(page)
    assert "“never” →" in _hover_cell(page, 0, 3, 1, len(tokens))
    _shot(page, "09-text")


@pytest.mark.live
def test_weights_file_upload_renders_and_shows_the_curl_upload(page, server, tmp_path):
    weights = np.random.default_rng(3).random((2, 3, 5, 5)).astype(np.float32)
    path = tmp_path / "my attention.npy"
    np.save(path, weights)
    _open(page, f"{server}/")
    page.select_option("#model", "raw-weights")
    page.set_input_files("#weights-file", str(path))
    _wait_rendered(page)
    assert "Using my attention.npy: L=2 × H=3 × Q=5 × K=5" in page.inner_text("#weights-hint")
    assert page.get_attribute("#layer", "min") == "-2" and page.locator("#head option").count() == 3 + 3
    curl = page.inner_text("#curl")
    assert "-F 'weights=@my attention.npy'" in curl and "--form-string layer=-1" in curl
    assert _replay_curl(curl, {"my attention.npy": path}).content == _downloaded_png(page, "download-npy.png")
    page.select_option("#head", "1")
    page.select_option("#view", "grid")
    page.wait_for_function("() => document.querySelector('.meta').innerText.includes('one panel each')")
    _wait_rendered(page)
    assert "head 0" in _hover_cell(page, 0.2, 0.2, 2, 2)


@pytest.mark.live
def test_page_asks_for_a_token_when_the_api_needs_one(browser):
    token = "page-test-token-0123456789"
    env = {"ATTNMAP_BUILTIN_MODELS": "none", "ATTNMAP_API_TOKENS": token}
    with gunicorn_server(env, workers=1) as (base, _process):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        problems = PageProblems(tab)
        try:
            _open(tab, f"{base}/")
            tab.wait_for_selector("#auth[open]")
            assert "needs an API token" in tab.inner_text("#alert")
            tab.fill("#token", token)
            tab.press("#token", "Enter")
            tab.wait_for_selector("#alert", state="hidden")
            tab.select_option("#model", "raw-weights")
            tab.click("#sample-weights")
            _wait_rendered(tab)
            curl = tab.inner_text("#curl")
            assert '-H "Authorization: Bearer $ATTNMAP_TOKEN"' in curl and token not in curl
            tab.screenshot(path=str(WEB_ARTIFACTS / "10-token.png"), full_page=True)
        finally:
            context.close()
    assert problems.errors == []


# ---------------------------------------------------------------------------------------------
# Reading long inputs: token clicks, head thumbnails, the text view, zoom, keeping the result in view

PARAGRAPH = (ROOT / "tests" / "data" / "paragraph_300_words.txt").read_text(encoding="utf-8").strip()


def _query_value(page: Any) -> str:
    return page.input_value("#query")


@pytest.mark.live
def test_clicking_a_token_label_makes_it_the_query(page, server):
    require_model("minilm")
    _open(page, f"{server}/")
    page.select_option("#model", "minilm")
    page.get_by_role("button", name="He never smoked.").first.click()
    first = _wait_rendered(page)[0]
    assert page.is_visible(".axis-title-x") and page.is_visible(".axis-title-y")
    assert page.inner_text(".axis-title-y") == "query" and page.inner_text(".axis-title-x") == "key"
    _shot(page, "10-token-axes")
    page.locator(".axis-y .axis-token").nth(2).click()  # "never"
    assert _query_value(page) == "2"
    _wait_new_image(page, first)
    page.wait_for_function("() => document.querySelector('.meta').innerText.includes('“never”')")
    assert "attention from “never”" in page.inner_text(".axis-title-x")
    assert "query=2" not in page.inner_text("#curl") and '"query":2' in page.inner_text("#curl")
    # The strip's key labels are clickable too: "smoked" becomes the query.
    second = page.eval_on_selector(".map-img", "(img) => img.src")
    page.locator(".axis-x .axis-token").nth(3).click()
    assert _query_value(page) == "3"
    _wait_new_image(page, second)
    _shot(page, "11-token-clicked")


@pytest.mark.live
def test_grid_thumbnails_select_a_head(page, server):
    require_model("minilm")
    _open(page, f"{server}/")
    page.select_option("#model", "minilm")
    page.fill("#text", "The animal didn't cross the street because it was too tired.")
    page.select_option("#view", "grid")
    page.click("#render")
    first = _wait_rendered(page)[0]
    picks = page.locator(".head-pick")
    assert picks.count() == 12
    assert picks.nth(5).inner_text() == "head 5"
    # Each thumbnail's button sits at the top left of its panel (inside the picture).
    frame = page.locator(".map-frame").bounding_box()
    box = picks.nth(11).bounding_box()
    assert frame["x"] < box["x"] < frame["x"] + frame["width"] and frame["y"] < box["y"] < frame["y"] + frame["height"]
    _shot(page, "12-grid-thumbnails")
    picks.nth(5).click()
    _wait_new_image(page, first)
    assert page.input_value("#view") == "heatmap" and page.input_value("#head") == "5"
    page.wait_for_function("() => document.querySelector('.meta').innerText.includes('head 5')")
    assert page.locator(".head-pick").count() == 0
    _shot(page, "13-grid-head-picked")


@pytest.mark.live
def test_long_text_view_reads_and_clicks_tokens(page, server):
    require_model("minilm")
    _open(page, f"{server}/")
    page.select_option("#model", "minilm")
    page.fill("#text", PARAGRAPH)
    page.select_option("#view", "text")
    # Render sits at the bottom of the form: after it, the result must be in view.
    page.locator("#render").scroll_into_view_if_needed()
    page.click("#render")
    first = _wait_rendered(page)[0]
    assert page.is_checked("#clip_special"), "long inputs leave special tokens out of the colour range"
    top = page.evaluate("() => document.querySelector('.map').getBoundingClientRect().top")
    assert 0 <= top < 900 * 0.6, f"the result is at {top} px after Render"
    width = page.eval_on_selector(".map-img", "(img) => img.naturalWidth")
    shown = page.eval_on_selector(".map-img", "(img) => img.getBoundingClientRect().width")
    assert width == 512 and abs(shown - 512) < 2, "the text view is shown at its own pixel size"
    document = requests.post(f"{server}/visualize", timeout=60, json={
        "model": "minilm", "text": PARAGRAPH, "view": "text", "clip_special": True, "format": "json"}).json()
    boxes = document["meta"]["boxes"]
    assert len(boxes) == len(document["values"]) > 300
    # Hover token 15 by its box: the readout names it and gives its value.
    target = 15
    frame = page.locator(".map-img")
    frame.scroll_into_view_if_needed()
    rect = frame.bounding_box()
    x, y, w, h = boxes[target]
    scale = rect["width"] / width
    page.mouse.move(rect["x"] + (x + w / 2) * scale, rect["y"] + (y + h / 2) * scale)
    label = document["meta"]["key_tokens"][target]
    page.wait_for_function("(label) => document.querySelector('.readout').innerText.includes(label)", arg=f"“{label}”")
    assert math.isclose(_readout_value(page.inner_text(".readout")), document["values"][target], rel_tol=1e-3)
    _shot(page, "14-long-text-received")
    page.mouse.click(rect["x"] + (x + w / 2) * scale, rect["y"] + (y + h / 2) * scale)
    assert _query_value(page) == str(target)
    _wait_new_image(page, first)
    page.wait_for_function("(label) => document.querySelector('.meta').innerText.includes(label)", arg=f"“{label}”")
    _shot(page, "15-long-text-query")
    # Zoom: the picture grows inside its scroll box, the page itself does not get wider.
    page.click(".zoom-in")
    page.click(".zoom-in")
    sizes = page.evaluate("""() => {
      const box = document.querySelector('.map-scroll');
      return [box.scrollWidth, box.clientWidth, document.documentElement.scrollWidth, document.documentElement.clientWidth];
    }""")
    assert sizes[0] > sizes[1] and sizes[2] <= sizes[3]
    assert abs(page.eval_on_selector(".map-img", "(img) => img.getBoundingClientRect().width") - 2 * width) < 8
    _shot(page, "16-long-text-zoomed")


@pytest.mark.live
def test_four_thousand_tokens_in_the_text_view(page, server):
    words = (PARAGRAPH.split() * 14)[:4000]
    rng = np.random.default_rng(7)
    row = rng.random(4000) ** 6
    weights = [(row / row.sum()).round(6).tolist()]
    _open(page, f"{server}/")
    page.select_option("#model", "raw-weights")
    page.fill("#weights-text", json.dumps(weights))
    page.wait_for_function("() => document.getElementById('weights-hint').textContent.includes('K=4000')")
    page.fill("#tokens", ", ".join(word.replace(",", "") for word in words))
    page.dispatch_event("#tokens", "change")
    page.select_option("#view", "text")
    page.click("#render")
    _wait_rendered(page)
    natural = page.eval_on_selector(".map-img", "(img) => [img.naturalWidth, img.naturalHeight]")
    assert natural[1] <= 4096 and natural[0] >= 512
    assert page.is_hidden("#alert")
    page.locator(".map").screenshot(path=str(WEB_ARTIFACTS / "17-text-4000-tokens.png"))
    png = _downloaded_png(page, "text-4000-tokens.png")
    assert Image.open(io.BytesIO(png)).size == tuple(natural)


@pytest.mark.live
def test_curl_box_wraps_and_examples_have_distinct_names(page, server):
    _open(page, f"{server}/")
    captions = page.locator(".thumb span").all_inner_texts()
    assert len(captions) == len(set(captions)), captions
    page.select_option("#model", "raw-weights")
    page.click("#sample-weights")
    _wait_rendered(page)
    overflow = page.evaluate("() => { const pre = document.querySelector('.curl'); return pre.scrollWidth - pre.clientWidth; }")
    assert overflow <= 1
    # The view select reads in full: its options are short enough for the field.
    fits = page.evaluate("""() => { const s = document.getElementById('view');
      const probe = document.createElement('span'); probe.style.font = getComputedStyle(s).font;
      probe.style.position = 'absolute'; probe.style.whiteSpace = 'nowrap';
      document.body.append(probe);
      const widest = Math.max(...[...s.options].map((o) => { probe.textContent = o.text; return probe.offsetWidth; }));
      probe.remove(); return [widest, s.clientWidth]; }""")
    assert fits[0] + 28 <= fits[1], fits
    assert "on the left" not in page.inner_text("#empty")
    name = page.locator(".download").get_attribute("download")
    assert "-layer2-" in name and "layer-1" not in name, name
