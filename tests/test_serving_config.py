"""Deployment configuration, checked without running it: Gunicorn, nginx, Dockerfile, compose, Kubernetes.

No container engine runs here, so the Dockerfile is parsed, not built; the Kubernetes manifests are
validated offline against the schemas that kubernetes-validate ships.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import runpy
import subprocess
import sys
import types
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from app.service.config import Limits, Settings
from tests.helpers import require_binary
from tests.serving_support import render_nginx_conf

ROOT = Path(__file__).resolve().parent.parent
NGINX = (ROOT / "deploy" / "nginx.conf").read_text()
K8S_DIR = ROOT / "deploy" / "k8s"
# The oldest and the newest Kubernetes minor that the installed kubernetes-validate has schemas for
# and that providers still run.
K8S_VERSIONS = ("1.30.0", "1.37.0")


@pytest.fixture
def gunicorn_conf(monkeypatch) -> dict:
    """gunicorn.conf.py evaluated with none of its environment overrides set."""
    for name in ("ATTNMAP_BIND", "ATTNMAP_WORKERS", "ATTNMAP_TIMEOUT", "ATTNMAP_GRACEFUL_TIMEOUT",
                 "ATTNMAP_MAX_REQUESTS", "ATTNMAP_FORWARDED_ALLOW_IPS", "ATTNMAP_LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR"):
        # setenv first so that monkeypatch records the original state and restores it (a hook sets
        # PROMETHEUS_MULTIPROC_DIR in os.environ, as it does in the master).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def nginx_seconds(directive: str) -> float:
    """The value (in seconds) of a directive that occurs exactly once in deploy/nginx.conf."""
    values = re.findall(rf"^\s*{directive}\s+(\d+)s;", NGINX, flags=re.MULTILINE)
    assert len(values) == 1, f"{directive}: {values}"
    return float(values[0])


def deployment() -> dict:
    return yaml.safe_load((K8S_DIR / "deployment.yaml").read_text())


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# --- timeouts -----------------------------------------------------------------------------------


def test_timeouts_are_ordered_client_app_gunicorn_proxy(gunicorn_conf):
    client = max(nginx_seconds("client_header_timeout"), nginx_seconds("client_body_timeout"))
    deadline = Settings().request_deadline_s
    assert client == 10
    assert client < deadline == 30 < gunicorn_conf["timeout"] == 60 < nginx_seconds("proxy_read_timeout") == 65
    assert nginx_seconds("proxy_connect_timeout") <= 2


def test_orchestrators_wait_longer_than_the_graceful_timeout(gunicorn_conf):
    graceful = gunicorn_conf["graceful_timeout"]
    pod = deployment()["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= graceful + pre_stop + 5
    stop_grace = compose()["services"]["app"]["stop_grace_period"]
    assert int(stop_grace.rstrip("s")) > graceful


# --- gunicorn.conf.py -----------------------------------------------------------------------------


def test_gunicorn_values_stay_deliberate(gunicorn_conf):
    conf = gunicorn_conf
    assert conf["preload_app"] is False
    assert conf["worker_class"] == "app.ops.gunicorn_worker.AttnmapWorker" and conf["threads"] == 1
    assert conf["worker_tmp_dir"] == "/dev/shm"
    assert "*" not in conf["forwarded_allow_ips"]
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]
    assert conf["control_socket_disable"] is True
    assert conf["limit_request_line"] == 4094 and conf["limit_request_field_size"] == 8190
    for hook in ("on_starting", "when_ready", "pre_fork", "post_worker_init", "worker_int", "worker_abort",
                 "child_exit", "on_exit"):
        assert callable(conf[hook]), hook


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    critical = error = info


def test_master_hooks_refuse_to_fork_once_cuda_is_initialised(gunicorn_conf, monkeypatch):
    server = types.SimpleNamespace(log=_Log())
    gunicorn_conf["pre_fork"](server, None)  # the real torch here: CUDA untouched
    fake_cuda = types.SimpleNamespace(is_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake_cuda))
    for hook, args in (("when_ready", (server,)), ("pre_fork", (server, None))):
        with pytest.raises(RuntimeError, match="CUDA"):
            gunicorn_conf[hook](*args)
    assert any("CUDA was initialised" in line for line in server.log.lines)


def test_master_hooks_do_not_import_torch():
    """Run the master's hooks in a fresh interpreter: torch must not appear in sys.modules."""
    code = (
        "import runpy, sys, types, os\n"
        "conf = runpy.run_path('gunicorn.conf.py')\n"
        "log = types.SimpleNamespace(info=print, critical=print, error=print)\n"
        "server = types.SimpleNamespace(log=log)\n"
        "conf['on_starting'](server); conf['when_ready'](server); conf['pre_fork'](server, None)\n"
        "conf['child_exit'](server, types.SimpleNamespace(pid=123456))\n"
        "conf['on_exit'](server)\n"
        "assert 'torch' not in sys.modules and 'app' not in sys.modules, sorted(sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_metrics_directory_is_made_fresh_and_removed(gunicorn_conf, monkeypatch, tmp_path):
    server = types.SimpleNamespace(log=_Log())
    gunicorn_conf["on_starting"](server)
    created = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    try:
        assert created.is_dir() and not any(created.iterdir())
    finally:
        gunicorn_conf["on_exit"](server)
    assert not created.exists()
    # An operator-provided directory is kept but emptied of a previous run's samples.
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_999.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    gunicorn_conf["on_starting"](server)
    gunicorn_conf["on_exit"](server)
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]


# --- nginx ----------------------------------------------------------------------------------------


def test_nginx_matches_the_app_limits_and_buffers():
    sizes = re.findall(r"^\s*client_max_body_size\s+(\d+)m;", NGINX, flags=re.MULTILINE)
    assert [int(size) * 1024 * 1024 for size in sizes] == [Limits().max_body_bytes]
    for directive in ("proxy_request_buffering on;", "proxy_buffering on;", "server_tokens off;",
                      "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                      "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header X-Forwarded-Host $host;",
                      "proxy_set_header X-Request-ID $attnmap_request_id;", "error_page 413 @payload_too_large;"):
        assert directive in NGINX, directive


def test_nginx_413_body_has_the_app_error_shape():
    body = re.search(r"return 413 '(.*)';", NGINX).group(1).replace("$attnmap_request_id", "rid")
    document = json.loads(body)
    assert set(document) == {"error", "request_id"} and set(document["error"]) == {"code", "message", "field"}
    assert document["error"]["code"] == "payload_too_large"


def test_nginx_accepts_the_rendered_config(tmp_path):
    nginx = require_binary("nginx")
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf("127.0.0.1:1", "127.0.0.1:1", tmp_path))
    result = subprocess.run([nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


# --- Dockerfile -------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (relative): the last pattern matching it or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    kept = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").removeprefix("**/")
        anywhere = pattern.lstrip("!").startswith("**/")
        names = prefixes + (parts if anywhere else [])
        if any(fnmatch.fnmatch(name, glob) for name in names):
            kept = negated
    return kept


def test_dockerfile_copies_existing_paths_not_ignored():
    patterns = dockerignore_patterns()
    # COPY --from=<stage> copies out of an earlier stage, not out of the build context.
    copies = [args for keyword, args in dockerfile_instructions() if keyword in {"COPY", "ADD"} and "--from=" not in args]
    assert copies
    for args in copies:
        parts = [part for part in args.split() if not part.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            if source != ".":
                assert in_build_context(source, patterns), f"{source} is in .dockerignore"
    # What the image needs is in the context (the Dockerfile copies the context with `COPY . ./`) ...
    for needed in ("pyproject.toml", "Makefile", "README.md", "gunicorn.conf.py", "openapi.yaml", "app/wsgi.py",
                   "models/builtin/shapes-vit/config.json", "scripts/healthcheck.py", "client/pyproject.toml"):
        assert (ROOT / needed).exists(), needed
        assert in_build_context(needed, patterns), needed
    # ... and what it must not carry is not.
    for left_out in ("tests/conftest.py", "bench", "training", ".git", ".venv", "deploy/nginx.conf", "docs",
                     "scripts/build-image.sh", "app/__pycache__/x.pyc", "attnmap.egg-info"):
        assert not in_build_context(left_out, patterns), left_out


def test_dockerfile_runs_gunicorn_config_as_non_root_with_healthcheck():
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in instructions:
        by_keyword.setdefault(keyword, []).append(args)
    assert json.loads(by_keyword["CMD"][-1]) == ["gunicorn", "-c", "gunicorn.conf.py"]
    assert by_keyword["USER"][-1] not in {"root", "0"}
    assert "scripts/healthcheck.py" in by_keyword["HEALTHCHECK"][-1]
    assert "/healthz" in (ROOT / "scripts" / "healthcheck.py").read_text()
    assert any("ATTNMAP_BIND=0.0.0.0:8000" in env for env in by_keyword["ENV"])
    args = dict(arg.split("=", 1) for arg in by_keyword["ARG"] if "=" in arg)
    assert args["TORCH_INDEX_URL"].endswith("/cu128")  # CUDA by default; .../cpu is the CPU switch
    assert args["WHEELS_IMAGE"] == "scratch" and args["TORCH_WHEEL"] == ""  # local wheels only when passed
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={args["TORCH_VERSION"]}"' in pyproject
    # Two stages on the same base: build tools stay in the first, the service runs from the last.
    assert by_keyword["FROM"] == ["${WHEELS_IMAGE} AS wheels", "${BASE_IMAGE} AS build", "${BASE_IMAGE}"]


# --- docker-compose.yml -----------------------------------------------------------------------------


def test_compose_puts_nginx_in_front_of_the_app():
    services = compose()["services"]
    app, nginx = services["app"], services["nginx"]
    assert "ports" not in app, "only nginx is published"
    assert app["environment"]["ATTNMAP_PROXY_HOPS"] == "1"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["app"]["condition"] == "service_healthy"
    assert re.search(r"^\s*server app:8000;", NGINX, flags=re.MULTILINE)
    assert any(port.endswith(":8080") for port in nginx["ports"]) and re.search(r"^\s*listen 8080;", NGINX, re.M)


# --- Kubernetes -------------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict]]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        documents.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_offline(version):
    kinds = set()
    for name, document in k8s_documents():
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")
        kinds.add(document["kind"])
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_k8s_validation_is_not_vacuous():
    document = deployment()
    document["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, K8S_VERSIONS[-1], strict=True)


def test_k8s_deployment_probes_gpu_and_selectors():
    docs = {document["kind"]: document for _, document in k8s_documents()}
    pod = docs["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ATTNMAP_PROXY_HOPS"] == "1"
    labels = pod["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = docs[kind]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_worker_class_is_a_sync_worker_the_master_can_import_without_the_app():
    """The master imports the worker class: it must be the sync worker and pull in no Flask or torch."""
    import subprocess
    import sys

    code = ("import sys; from app.ops.gunicorn_worker import AttnmapWorker; from gunicorn.workers.sync import SyncWorker;"
            "assert issubclass(AttnmapWorker, SyncWorker);"
            "bad = [m for m in ('flask', 'torch', 'numpy', 'app.http', 'app.service') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
