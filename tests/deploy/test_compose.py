"""The deployment files: compose validates and wires workers, Redis and the gateway together; the
gateway template is valid nginx; the image is configured only through real FRAMECAST_* settings."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from server.settings import Settings
from tests.deploy.harness import REPO, require, write_gateway

COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
SETTINGS = {f"FRAMECAST_{name.upper()}" for name in Settings.model_fields}


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    pytest.skip("neither `docker compose` nor docker-compose is installed")


def _mount(volume: dict | str) -> tuple[str, str]:
    """(source, target) of a volume in long (dict) or short ("src:dst[:mode]") syntax."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target = volume.split(":")[:2]
    return source, target


@pytest.fixture(scope="module")
def compose() -> dict:
    result = subprocess.run([*_compose_command(), "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_wires_gpu_workers_redis_and_gateway(compose):
    services = compose["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    assert len(workers) >= 2 and {"redis", "gateway"} <= set(services)
    gpus, volumes = [], set()
    for name, worker in workers.items():
        env = worker["environment"]
        assert set(env) <= SETTINGS, f"{name}: unknown settings {set(env) - SETTINGS}"
        assert env["FRAMECAST_REDIS_URL"].startswith("redis://redis:")
        mounts = {target: source for source, target in map(_mount, worker["volumes"])}
        volumes.add(mounts[env["FRAMECAST_DATA_DIR"]])
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        gpus.append(device["device_ids"][0])
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        assert env["FRAMECAST_FORWARDED_ALLOW_IPS"] == "*"  # only the gateway reaches them: trust its X-Forwarded-For
    assert len(set(gpus)) == len(workers), "each worker needs its own GPU"
    assert len(volumes) == 1, "every worker must mount the same data volume"
    gateway = services["gateway"]
    upstreams = gateway["environment"]["FRAMECAST_UPSTREAMS"]
    assert sorted(re.findall(r"server (\S+):8000", upstreams)) == sorted(workers)
    templates = {target: source for source, target in map(_mount, gateway["volumes"])}
    assert templates["/etc/nginx/templates/framecast.conf.template"].endswith("docker/gateway/framecast.conf.template")


def test_gateway_template_is_valid_nginx(tmp_path):
    nginx = require("nginx")
    main = write_gateway(tmp_path, ["127.0.0.1:9001", "127.0.0.1:9002"], 9000)
    site = (tmp_path / "framecast.conf").read_text()
    assert "${" not in site and "least_conn" in site
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_dockerfile_configures_through_settings_only():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", text, re.M), "the final stage runs on a CUDA runtime base"
    env_names = set(re.findall(r"\b(FRAMECAST_[A-Z_]+)=", text)) - {"FRAMECAST_EXTRAS"}  # build arg
    assert env_names and env_names <= SETTINGS, env_names - SETTINGS
    assert re.search(r"ARG FRAMECAST_EXTRAS=\S*gpu", text)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert 'ENTRYPOINT ["framecast", "serve"]' in text
