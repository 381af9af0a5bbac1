"""Platform files: each validated against the platform's published model or schema where one
can be had from the package index (Koyeb's API models in koyeb-sdk, Kubernetes' OpenAPI
schemas in kubernetes-validate, the compose spec in check-jsonschema), otherwise parsed and
checked field by field against the platform's documented settings. Every stop budget must fit
inside the platform's grace."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from supervisor.kit import platforms
from tests.conftest import ROOT, START_ALL, VENV_ENV

TEMPLATES = ROOT / "supervisor" / "kit" / "templates"
PLATFORM_DIR = TEMPLATES / "platforms"
K8S = TEMPLATES / "kubernetes" / "start-all.yaml"
COMPOSE_FILES = sorted((ROOT / "examples" / "docker-compose").glob("docker-compose*.yml"))


def env_value(items: list[dict], key: str) -> str | None:
    return next((item.get("value") for item in items if item.get("key") == key), None)


# --- Koyeb: the API's own DeploymentDefinition model (strict types, enums) ----------------


def koyeb_round_trip(data: dict) -> dict:
    """Parse with Koyeb's model and dump again: unknown keys disappear, bad types raise."""
    from koyeb.api.models.deployment_definition import DeploymentDefinition

    return DeploymentDefinition.from_dict(data).to_dict()


def kept(original, dumped) -> bool:
    """Every key and value of `original` survived the model (the model may add defaults)."""
    if isinstance(original, dict):
        return isinstance(dumped, dict) and all(
            key in dumped and kept(value, dumped[key]) for key, value in original.items()
        )
    if isinstance(original, list):
        return isinstance(dumped, list) and len(original) == len(dumped) and all(
            kept(a, b) for a, b in zip(original, dumped, strict=True)
        )
    return original == getattr(dumped, "value", dumped)


def test_koyeb_definition_matches_koyebs_api_model():
    data = json.loads((PLATFORM_DIR / "koyeb.json").read_text())
    assert kept(data, koyeb_round_trip(data)), "a key the Koyeb model does not know, or re-typed"
    assert data["type"] == "WEB" and data["instance_types"] == [{"type": "free"}]
    (check,) = data["health_checks"]
    port = int(env_value(data["env"], "PORT"))
    assert check["http"] == {"port": port, "path": "/healthz", "method": "GET"}
    assert {"port": port, "protocol": "http"} in data["ports"]
    # secrets are references, never values
    assert {"key": "DATABASE_URL", "secret": "database-url"} in data["env"]


def test_koyeb_model_check_can_fail():
    data = json.loads((PLATFORM_DIR / "koyeb.json").read_text())
    typo = copy.deepcopy(data)
    typo["health_checks"][0]["http"]["pathh"] = "/healthz"
    assert not kept(typo, koyeb_round_trip(typo))
    wrong_type = copy.deepcopy(data)
    wrong_type["ports"][0]["port"] = "8000"
    with pytest.raises(ValueError):
        koyeb_round_trip(wrong_type)


# --- Render, Fly, Railway: no schema on the index; their documented fields ---------------


def test_render_blueprint_fields():
    blueprint = yaml.safe_load((PLATFORM_DIR / "render.yaml").read_text())
    assert set(blueprint) == {"services"}
    (service,) = blueprint["services"]
    documented = {
        "type", "name", "runtime", "plan", "dockerfilePath", "healthCheckPath",
        "maxShutdownDelaySeconds", "envVars",
    }
    assert set(service) <= documented
    assert service["type"] == "web" and service["runtime"] == "docker"
    assert service["plan"] == "free"
    assert service["healthCheckPath"] == "/healthz"
    assert 1 <= service["maxShutdownDelaySeconds"] <= 300
    for var in service["envVars"]:
        assert set(var) in ({"key", "value"}, {"key", "sync"}, {"key", "generateValue"}), var
        assert isinstance(var.get("value", ""), str)
    stop = float(env_value(service["envVars"], "START_ALL_STOP_TIMEOUT"))
    assert stop + platforms.EXIT_MARGIN <= service["maxShutdownDelaySeconds"]


def test_fly_config_fields():
    config = tomllib.loads((PLATFORM_DIR / "fly.toml").read_text())
    assert config["kill_signal"] == "SIGTERM"
    assert isinstance(config["kill_timeout"], int) and config["kill_timeout"] > 5
    service = config["http_service"]
    assert str(service["internal_port"]) == config["env"]["PORT"]
    assert service["auto_stop_machines"] in ("off", "stop", "suspend")
    (check,) = service["checks"]
    assert check["path"] == "/healthz" and check["method"] == "GET"
    stop = float(config["env"]["START_ALL_STOP_TIMEOUT"])
    assert stop + platforms.EXIT_MARGIN <= config["kill_timeout"]
    assert config["vm"][0]["memory"] == "512mb"


def test_railway_config_fields():
    config = json.loads((PLATFORM_DIR / "railway.json").read_text())
    assert config["$schema"] == "https://railway.com/railway.schema.json"
    assert config["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    deploy = config["deploy"]
    assert deploy["healthcheckPath"] == "/healthz"
    assert deploy["restartPolicyType"] in ("ON_FAILURE", "ALWAYS", "NEVER")
    for field in ("healthcheckTimeout", "restartPolicyMaxRetries", "drainingSeconds"):
        assert isinstance(deploy[field], int), field
    # the image's default stop budget (8 s) fits inside the draining time set here
    assert 8 + platforms.EXIT_MARGIN <= deploy["drainingSeconds"]


@pytest.mark.parametrize("name", sorted(platforms.PLATFORMS))
def test_each_template_stop_budget_fits_its_platform(tmp_path, name):
    platform = platforms.PLATFORMS[name]
    (tmp_path / platform.config_file).write_bytes((TEMPLATES / platform.template).read_bytes())
    environ = {platform.detect[0]: "x"}
    assert platforms.detect(tmp_path, environ) == [(platform, "environment")]
    assert platforms.stop_budget_problem(platform, platform.stop_timeout, tmp_path, environ) is None
    # and the check notices a budget that does not fit
    assert platforms.stop_budget_problem(platform, 60, tmp_path, environ)


def test_platform_defaults_without_a_config_file(tmp_path):
    fly, railway, render = (platforms.PLATFORMS[n] for n in ("fly", "railway", "render"))
    assert fly.grace(tmp_path, {}).seconds == 5
    assert railway.grace(tmp_path, {}).seconds == 0
    assert railway.grace(tmp_path, {"RAILWAY_DEPLOYMENT_DRAINING_SECONDS": "20"}).seconds == 20
    assert render.grace(tmp_path, {}).seconds == 30
    (tmp_path / "fly.toml").write_text('kill_timeout = "1m30s"\nkill_signal = "SIGQUIT"\n')
    assert fly.grace(tmp_path, {}).seconds == 90
    assert "SIGTERM" in platforms.fly_signal_problem(tmp_path)


# --- Kubernetes: the OpenAPI schemas shipped in kubernetes-validate ----------------------


def k8s_documents() -> list[dict]:
    return list(yaml.safe_load_all(K8S.read_text()))


def k8s_validate(document: dict) -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    kubernetes_validate.validate(document, latest_version(), strict=True)


def test_kubernetes_manifests_validate_against_the_schemas():
    documents = k8s_documents()
    assert {d["kind"] for d in documents} == {"Deployment", "Service"}
    for document in documents:
        k8s_validate(document)


def test_kubernetes_validation_can_fail():
    import kubernetes_validate

    deployment = copy.deepcopy(k8s_documents()[0])
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30  # not a field
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(deployment)


def test_kubernetes_probes_grace_and_memory_match_start_all():
    roles = set()
    for document in k8s_documents():
        if document["kind"] != "Deployment":
            continue
        pod = document["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        roles.add(env["START_ALL_ONLY"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["health"] == 8081  # START_ALL_HEALTH_PORT's default
        stop = float(env["START_ALL_STOP_TIMEOUT"])
        assert pod["terminationGracePeriodSeconds"] > stop + platforms.EXIT_MARGIN
        assert container["resources"]["limits"]["memory"] == "512Mi"
    assert roles == {"web", "worker"}


# --- compose files: the compose spec ------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec(path: Path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
         "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- `start-all check` on a platform ------------------------------------------------------


def run_check(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*START_ALL, "check", str(project)],
        env={"PATH": VENV_ENV["PATH"], "PYTHONPATH": VENV_ENV["PYTHONPATH"], **env},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "env, fly_toml, expect",
    [
        ({"FLY_APP_NAME": "a", "START_ALL_STOP_TIMEOUT": "8"}, None, "exceeds Fly.io's grace (5 s"),
        ({"FLY_APP_NAME": "a", "START_ALL_STOP_TIMEOUT": "8"}, "kill_timeout = 15\n", None),
        ({"RAILWAY_ENVIRONMENT_NAME": "production"}, None, "exceeds Railway's grace (0 s"),
        ({"RENDER": "true", "START_ALL_STOP_TIMEOUT": "40"}, None, "exceeds Render's grace (30 s"),
        ({"RENDER": "true"}, None, None),
        ({"KOYEB_APP_NAME": "a", "START_ALL_STOP_TIMEOUT": "20"}, None, "does not document"),
    ],
)
def test_check_warns_when_the_stop_budget_exceeds_the_platform_grace(
    tmp_path, env, fly_toml, expect
):
    (tmp_path / "Procfile").write_text("web: gunicorn app:app\n")
    if fly_toml:
        (tmp_path / "fly.toml").write_text(fly_toml)
    result = run_check(tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    budget = [w for w in warnings if "START_ALL_STOP_TIMEOUT" in w]
    if expect:
        assert len(budget) == 1 and expect in budget[0], result.stdout
    else:
        assert budget == [], result.stdout
    assert any(line.startswith("ok: platform:") for line in result.stdout.splitlines())


# --- `start-all init KIND --platform NAME` ------------------------------------------------


def run_init(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*START_ALL, "init", "django-native", str(project), *args],
        env={"PATH": VENV_ENV["PATH"], "PYTHONPATH": VENV_ENV["PYTHONPATH"]},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("name", [*sorted(platforms.PLATFORMS), "kubernetes"])
def test_init_writes_the_platform_file_and_check_accepts_it(tmp_path, name):
    from supervisor.kit.init import PLATFORMS

    ((dest, source),) = PLATFORMS[name].items()
    result = run_init(tmp_path, "--platform", name)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / dest).read_bytes() == (TEMPLATES / source).read_bytes()
    assert f"wrote {tmp_path / dest}" in result.stdout
    assert "next steps:" in result.stdout and dest.split("/")[0] in result.stdout
    again = run_init(tmp_path, "--platform", name)
    assert f"unchanged {tmp_path / dest}" in again.stdout
    if name in platforms.PLATFORMS:  # the file alone tells check which host it is
        checked = run_check(tmp_path, {})
        assert f"ok: platform: {platforms.PLATFORMS[name].title} (from {dest}" in checked.stdout
        assert "START_ALL_STOP_TIMEOUT" not in checked.stdout, checked.stdout


def test_init_refuses_an_unknown_platform(tmp_path):
    result = run_init(tmp_path, "--platform", "heroku")
    assert result.returncode == 2
    assert "invalid choice: 'heroku'" in result.stderr
    assert not (tmp_path / "Procfile").exists()
