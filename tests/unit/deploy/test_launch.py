"""docker/launch.py: compose.yaml read the way Compose reads it, as docker run or processes.

Fast (no engine, no Ray): the plans the launcher makes from the real compose files. The
two-node cluster it starts is tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "docker"))

import compose_plan  # noqa: E402
import hostroot  # noqa: E402
import launch_docker  # noqa: E402
import launch_processes  # noqa: E402

COMPOSE = ROOT / "docker" / "compose.yaml"
GPU = ROOT / "docker" / "compose.gpu.yaml"
ENV = {"RAYKD_RAY_TOKEN": "ray-secret", "RAYKD_TOKEN": "api-secret", "PATH": "/usr/bin"}


def plan(tmp_path: Path, files: list[Path] | None = None, **kw: object) -> compose_plan.Plan:
    return compose_plan.load_plan(files or [COMPOSE], environ=ENV, env_file=tmp_path / "none.env", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "env", "want"), [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""),
    ("${A-x}", {"A": "v"}, "v"), ("$A/${B}", {"A": "1", "B": "2"}, "1/2"),
    ("${A:+y}", {"A": "v"}, "y"), ("${A:+y}", {}, ""), ('exec "$$@"', {}, 'exec "$@"'),
])
def test_interpolation(text: str, env: dict[str, str], want: str) -> None:
    assert compose_plan.interpolate(text, env) == want


def test_a_required_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(compose_plan.PlanError, match=r"RAYKD_RAY_TOKEN is required: set RAYKD_RAY_TOKEN in docker/.env"):
        compose_plan.load_plan([COMPOSE], environ={"RAYKD_TOKEN": "x"}, env_file=tmp_path / "none.env")
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "launch.py"), "--mode", "docker", "config"],
                          env={"PATH": "/usr/bin:/bin", "RAYKD_RAY_TOKEN": "x"}, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "RAYKD_TOKEN is required" in proc.stderr and "Traceback" not in proc.stderr


def test_env_file_fills_what_the_environment_lacks(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nRAYKD_RAY_TOKEN='from-file'\nRAYKD_TOKEN=file-api\nRAYKD_API_PORT=9000 # note\n")
    p = compose_plan.load_plan([COMPOSE], environ={"RAYKD_TOKEN": "env-api"}, env_file=env_file)
    (api,) = p.by_service("api")
    assert api.environment["RAYKD_RAY_TOKEN"] == "from-file"
    assert api.environment["RAYKD_TOKEN"] == "env-api", "the environment wins over .env"
    assert api.ports[0].host_port == 9000


def test_services_profiles_and_order(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert [c.name for c in p.containers] == ["raykd-ray-head-1", "raykd-ray-worker-1", "raykd-ray-worker-2",
                                              "raykd-api-1"], "no profile: the cluster and the API"
    with_pg = plan(tmp_path, profiles=["postgres"])
    names = [c.service for c in with_pg.containers]
    assert names.index("postgres") < names.index("api"), "the API waits for its database"
    one = plan(tmp_path, services=["submit"], scale={"ray-worker": 1})
    assert [c.service for c in one.containers] == ["ray-head", "ray-worker", "submit"], "named + its deps"
    with pytest.raises(compose_plan.PlanError, match="no such service: nope"):
        plan(tmp_path, services=["nope"])


def test_unsupported_keys_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  a:\n    image: x\n    sysctls: {net.core.somaxconn: 1024}\n")
    with pytest.raises(compose_plan.PlanError, match="service a: unsupported key.*sysctls"):
        compose_plan.load_plan([bad], environ={}, env_file=tmp_path / "none.env")


def test_docker_run_lines(tmp_path: Path) -> None:
    p = plan(tmp_path)
    (api,) = p.by_service("api")
    argv = launch_docker.run_argv(p, api, env_file=tmp_path / "env")
    joined = " ".join(argv)
    assert argv[:3] == ["docker", "run", "-d"] and "--name raykd-api-1" in joined
    assert "--network raykd_raykd --network-alias api" in joined
    assert "-v raykd_raykd-runs:/data/raykd-runs" in joined and "-p 127.0.0.1:8000:8000" in joined
    assert "--cap-drop ALL" in joined and "--security-opt no-new-privileges:true" in joined
    assert "--env-file" in argv and "api-secret" not in joined, "tokens stay off the command line"
    assert argv[argv.index("--entrypoint") + 1] == "raykd" and argv[-2:] == ["raykd:local", "serve"]
    head = launch_docker.run_argv(p, p.by_service("ray-head")[0])
    assert head[head.index("raykd:local") + 1:][:3] == ["start", "--head", "--block"]
    assert "/api/gcs_healthz" in head[head.index("--health-cmd") + 1]
    assert "-e" in head and "RAY_AUTH_MODE=token" in head, "without an env file: -e (launch.py config)"


def test_gpu_override(tmp_path: Path) -> None:
    p = plan(tmp_path, files=[COMPOSE, GPU])
    workers = p.by_service("ray-worker")
    assert len(workers) == 3 and {w.image for w in workers} == {"raykd:cu128"}
    argv = launch_docker.run_argv(p, workers[0])
    assert argv[argv.index("--gpus") + 1] == "1"
    assert "--gpus" not in launch_docker.run_argv(p, p.by_service("ray-head")[0])
    builds = {b.image: b.args for b in p.builds}
    assert "/whl/cu128" in builds["raykd:cu128"]["TORCH_INDEX_URL"]
    assert builds["raykd:local"]["TORCH_INDEX_URL"].endswith("/whl/cpu"), "the merge kept the CPU image"


def test_an_override_file_adds_mounts_by_target_and_keeps_the_rest(tmp_path: Path) -> None:
    over = tmp_path / "over.yaml"
    over.write_text("services:\n  ray-head:\n    volumes:\n      - /usr:/usr:ro\n"
                    "      - ./elsewhere:/data/raykd-runs\n  api:\n    volumes: ['/usr:/usr:ro']\n")
    p = plan(tmp_path, files=[COMPOSE, over])
    head = {m.target: m for m in p.by_service("ray-head")[0].mounts}
    assert head["/usr"].read_only and head["/usr"].source == "/usr"
    assert not head["/data/raykd-runs"].named, "a mount at the same target replaces the volume"
    api = {m.target: m for m in p.by_service("api")[0].mounts}
    assert api["/data/raykd-runs"].named and api["/usr"].read_only, "other mounts are kept"


def test_hostroot_image_and_overlay() -> None:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(hostroot.root_tar()), mode="r") as tar:
        members = {m.name: m for m in tar.getmembers()}
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert members["bin"].issym() and members["bin"].linkname == "usr/bin"
    assert members["data/raykd-runs"].uid == 1000 and members["tmp"].mode == 0o1777
    users = [line.split(":") for line in passwd.splitlines()]
    assert [u[0] for u in users if u[2] == "1000"] == ["raykd"]  # one uid 1000, the image's user
    mounts = hostroot.overlay("img:1")["services"]["ray-head"]["volumes"]  # type: ignore[index]
    paths = [Path(m.split(":")[0]) for m in mounts]
    assert Path("/usr") in paths and ROOT in paths or any(ROOT.is_relative_to(q) for q in paths)
    assert all(m.endswith(":ro") for m in mounts)
    assert not [a for a in paths for b in paths if a != b and a.is_relative_to(b)], "no nested mounts"


def test_processes_on_loopback(tmp_path: Path) -> None:
    p = plan(tmp_path, services=["ray-head", "ray-worker", "api"], scale={"ray-worker": 2})
    procs = {q.container.name: q for q in launch_processes.plan_processes(p, tmp_path / "state", environ=ENV)}
    head, w1, w2, api = (procs[f"raykd-{n}"] for n in ("ray-head-1", "ray-worker-1", "ray-worker-2", "api-1"))
    gcs, dash = head.ports[6379], head.ports[8265]
    assert dash == 8265, "a published port keeps its host port"
    assert f"--port={gcs}" in head.argv and "--dashboard-host=127.0.0.1" in head.argv
    for w in (w1, w2):
        assert f"--address=127.0.0.1:{gcs}" in w.argv, "ray-head:6379 is the head's GCS on loopback"
    agents = {q.ports[launch_processes.RAY_AGENT_PORT] for q in (head, w1, w2)}
    temps = {a for q in (head, w1, w2) for a in q.argv if a.startswith("--temp-dir=")}
    assert len(agents) == 3 and len(temps) == 3, "each raylet has its own agent port and temp dir"
    assert w1.health and f"127.0.0.1:{w1.ports[launch_processes.RAY_AGENT_PORT]}" in w1.health[-1]
    storage = str(tmp_path / "state" / "volumes" / "raykd-runs")
    assert api.argv == ["raykd", "serve"]
    assert api.env["RAYKD_RAY_ADDRESS"] == f"http://127.0.0.1:{dash}"
    assert api.env["RAYKD_STORAGE"] == storage and Path(storage).is_dir()
    assert api.env["RAYKD_HOST"] == "127.0.0.1" and api.env["RAYKD_PORT"] == "8000"
    assert api.env["RAY_AUTH_TOKEN"] == "ray-secret" and api.env["PATH"].startswith(str(Path(sys.executable).parent))


@pytest.mark.skipif(os.geteuid() != 0, reason="sets a folder's owner (needs root)")
def test_the_host_root_refuses_a_checkout_that_uid_1000_cannot_read(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The containers run as uid 1000 and get the checkout bound read-only: a 0700 folder of
    root's is refused with the chmod that fixes it; uid 1000's own 0700 folder is fine."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    os.chmod(tmp_path, 0o755)
    monkeypatch.setattr(hostroot, "ROOT", checkout)
    os.chmod(checkout, 0o700)
    with pytest.raises(hostroot.HostRootError, match=rf"`chmod o\+rx {checkout}`"):
        hostroot.host_paths()
    os.chmod(checkout, 0o711)  # others may enter but not list it: imports would fail
    with pytest.raises(hostroot.HostRootError, match="does not let uid 1000 read and enter it"):
        hostroot.host_paths()
    os.chown(checkout, hostroot.UID, hostroot.UID)
    os.chmod(checkout, 0o700)
    assert checkout in hostroot.host_paths()
