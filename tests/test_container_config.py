"""The container build, checked without podman: the healthcheck's address, the install recipe, the flags.

tests/test_container_live.py builds and runs the image; these run everywhere in milliseconds.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest

from tests.container_support import compose_run_flags, compose_service, grace_seconds
from tests.live import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "scripts" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("bind", "url"), [
    ("0.0.0.0:8000", "http://127.0.0.1:8000/healthz"),
    ("127.0.0.1:18123", "http://127.0.0.1:18123/healthz"),
    ("[::]:9000", "http://127.0.0.1:9000/healthz"),
    ("::1:9001", "http://[::1]:9001/healthz"),
    ("10.0.0.5:8000,127.0.0.1:8001", "http://10.0.0.5:8000/healthz"),
])
def test_healthcheck_asks_the_bind_address(bind, url):
    assert load_healthcheck().healthz_url(bind) == url


def test_healthcheck_refuses_a_bind_it_cannot_ask():
    with pytest.raises(ValueError, match="HOST:PORT"):
        load_healthcheck().healthz_url("unix:/run/attnmap.sock")


def test_healthcheck_exits_1_when_nothing_listens(monkeypatch):
    from tests.live import free_port

    monkeypatch.setenv("ATTNMAP_BIND", f"127.0.0.1:{free_port()}")
    assert load_healthcheck().main() == 1


def test_image_installs_the_project_with_the_readme_recipe():
    """`make install` in the image: what the Makefile's install recipe gains, the image gains."""
    assert re.search(r"^\s*&& make VENV=/opt/venv install", DOCKERFILE, flags=re.MULTILINE)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^install: \$\(STAMP\)( \$\(SMOLLM2_STAMP\))?$", makefile, flags=re.MULTILINE)
    assert re.search(r"^image:\n\tscripts/build-image.sh$", makefile, flags=re.MULTILINE)
    dry_run = subprocess.run(["make", "-n", "VENV=/nonexistent-venv", "install"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert dry_run.returncode == 0 and "pip install" in dry_run.stdout, dry_run.stderr


def test_final_stage_has_no_build_tools_or_caches():
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert final.startswith("${BASE_IMAGE}\n")
    assert "apt-get" not in final and "pip install" not in final and "make " not in final
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert "--mount=type=cache,target=/root/.cache/pip" in DOCKERFILE  # pip's cache stays outside the layers


def test_build_script_uses_the_podman_settings_this_machine_needs():
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    for needle in ("--runtime runc", "nofile=4096:4096", "nproc=4096:4096", "--network host", "--format docker",
                   "debootstrap --variant=minbase", "BASE_IMAGE=", "WHEELS_IMAGE=", "TORCH_WHEEL="):
        assert needle in script, needle
    syntax = subprocess.run(["bash", "-n", str(ROOT / "scripts" / "build-image.sh")], capture_output=True, timeout=30)
    assert syntax.returncode == 0, syntax.stderr


def test_compose_settings_become_podman_flags():
    flags = compose_run_flags(compose_service("app"))
    assert flags[:2] == ["--read-only", "--read-only-tmpfs=false"]
    assert flags[2:4] == ["--tmpfs", "/tmp:size=256m"]
    assert "--cap-drop" in flags and "ALL" in flags
    assert flags[flags.index("--security-opt") + 1] == "no-new-privileges"
    assert grace_seconds(compose_service("app")) == 45
