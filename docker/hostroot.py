#!/usr/bin/env python3
"""Containers from this checkout without building docker/Dockerfile: a "host-root" image.

    python docker/hostroot.py [--image raykd:hostroot] [--overlay /tmp/hostroot.yaml]
    python docker/launch.py -f docker/compose.yaml -f /tmp/hostroot.yaml up

Building docker/Dockerfile offline (a debootstrapped base, a local wheelhouse) took about
15 minutes on a 2-core CI machine, most of it unpacking torch twice. For tests and for
trying the compose topology from a checkout, this makes an image in a second instead: an
almost empty root filesystem (merged-/usr symlinks, ``/tmp``, ``/data/raykd-runs`` and a
home owned by uid 1000, ``/etc/passwd``/``group`` with the ``raykd`` user, the linker
cache), configured as the Dockerfile's runtime stage is (``USER 1000:1000``, ``WORKDIR
/data``, ``ENTRYPOINT ["raykd"]``, the same environment), plus a compose override file
that binds this host's ``/usr``, its Python installation, virtual environment and the
checkout read-only into every service at the same paths. Everything else is compose.yaml's
own: the services' commands, environment, named volume, network and aliases, published
ports, health checks, ``cap_drop: ALL``, ``no-new-privileges``, ``--init`` and memory
limits; the processes run as uid 1000 in their own network and PID namespaces.

What it does not check is the Dockerfile's build: hadolint does (tests/unit/deploy/test_files.py), and
``docker build`` does wherever it can reach an index or a wheelhouse.

Needs a Linux host with a merged ``/usr`` (``/bin`` a link to ``usr/bin``: Debian 12,
Ubuntu 22.04, Fedora) and the current Python's packages installed (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import io
import json
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
UID = 1000
DEFAULT_IMAGE = "raykd:hostroot"
SERVICES = ("ray-head", "ray-worker", "api", "submit", "sweep")
LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64"}


class HostRootError(RuntimeError):
    """This host cannot lend its filesystem to a container (the message says why)."""


def root_tar(etc: Path = Path("/etc")) -> bytes:
    """The image's whole root filesystem, as an uncompressed tar."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, kind: bytes, mode: int = 0o755, uid: int = 0, data: bytes = b"",
                link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, uid, now
            info.linkname, info.size = link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for name, target in LINKS.items():
            add(name, tarfile.SYMTYPE, link=target)
        # sbin is a real folder: Docker mounts its init at /sbin/docker-init before /usr
        for name in ("usr", "etc", "root", "proc", "sys", "dev", "work", "data", "home", "var", "sbin"):
            add(name, tarfile.DIRTYPE)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("var/tmp", tarfile.DIRTYPE, 0o1777)
        add("data/raykd-runs", tarfile.DIRTYPE, uid=UID)  # a new named volume copies this owner
        add("home/raykd", tarfile.DIRTYPE, uid=UID)
        for name, line in (("passwd", f"raykd:x:{UID}:{UID}::/home/raykd:/bin/bash"),
                           ("group", f"raykd:x:{UID}:")):
            kept = [ln for ln in (etc / name).read_text().splitlines()
                    if len(ln.split(":")) > 2 and ln.split(":")[2] != str(UID) and not ln.startswith("raykd:")]
            add(f"etc/{name}", tarfile.REGTYPE, 0o644, data=("\n".join([*kept, line]) + "\n").encode())
        for name in ("ld.so.cache", "nsswitch.conf"):
            if (etc / name).is_file():
                add(f"etc/{name}", tarfile.REGTYPE, 0o644, data=(etc / name).read_bytes())
    return buf.getvalue()


def host_paths() -> list[Path]:
    """What every container needs from this host, read-only at the same paths (no nesting)."""
    for name, target in LINKS.items():
        if not (Path("/") / name).is_symlink() or Path("/", name).resolve() != Path("/", target).resolve():
            raise HostRootError(f"/{name} is not a link to /{target}: this host's /usr is not merged, "
                                "so its programs cannot be lent to a container; build docker/Dockerfile")
    wanted = [Path("/usr"), Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), ROOT]
    out: list[Path] = []
    for p in sorted(set(wanted), key=lambda q: len(q.parts)):
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    for p in wanted:  # uid 1000 walks from its mount point down to each wanted path
        top = next(q for q in out if p.is_relative_to(q))
        rel = p.relative_to(top).parts
        for d in (top.joinpath(*rel[:i]) for i in range(len(rel) + 1)):
            need = "rx" if d == p else "x"  # enter every folder on the way; read the last
            if not readable_by_uid(d, need):
                raise HostRootError(
                    f"{d} ({stat.filemode(d.stat().st_mode)}, uid {d.stat().st_uid}) does not let "
                    f"uid {UID} {'read and ' if need == 'rx' else ''}enter it, so a container "
                    f"cannot reach {p}: `chmod o+{need} {d}`, or clone into a directory others "
                    "can read")
    return out


def readable_by_uid(path: Path, need: str, uid: int = UID, gid: int = UID) -> bool:
    """Whether ``uid``:``gid`` (no supplementary groups) may ``need`` ("x", "rx") ``path``:
    the owner's bits if it owns it, else the group's if its group is ``gid``, else others'."""
    st = path.stat()
    if st.st_uid == uid:
        bits = {"r": stat.S_IRUSR, "x": stat.S_IXUSR}
    elif st.st_gid == gid:
        bits = {"r": stat.S_IRGRP, "x": stat.S_IXGRP}
    else:
        bits = {"r": stat.S_IROTH, "x": stat.S_IXOTH}
    return all(st.st_mode & bits[c] for c in need)


def build_image(name: str = DEFAULT_IMAGE) -> str:
    """``docker import`` the root filesystem with the Dockerfile runtime stage's config."""
    env = {"PATH": f"{Path(sys.prefix).resolve()}/bin:/usr/local/bin:/usr/bin:/bin",
           "HOME": "/home/raykd", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    changes = [f"USER {UID}:{UID}", "WORKDIR /data", 'ENTRYPOINT ["raykd"]', 'CMD ["--help"]',
               *(f"ENV {k}={json.dumps(v)}" for k, v in env.items())]
    argv = ["docker", "import", *(a for c in changes for a in ("-c", c)), "-", name]
    proc = subprocess.run(argv, input=root_tar(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise HostRootError(f"docker import failed: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    return name


def overlay(image: str = DEFAULT_IMAGE, services: tuple[str, ...] = SERVICES) -> dict[str, object]:
    """A compose override: each raykd service on ``image`` with the host's paths bound in."""
    mounts = [f"{p}:{p}:ro" for p in host_paths()]
    return {"services": {s: {"image": image, "volumes": list(mounts)} for s in services}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hostroot.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--overlay", type=Path, default=Path("/tmp/raykd-hostroot.yaml"),
                    help="where to write the compose override file")
    args = ap.parse_args(argv)
    try:
        build_image(args.image)
        args.overlay.write_text(yaml.safe_dump(overlay(args.image), sort_keys=False))
    except (HostRootError, OSError) as err:
        print(f"hostroot.py: {err}", file=sys.stderr)
        return 2
    print(f"image {args.image}; compose override {args.overlay}:\n"
          f"  python docker/launch.py -f docker/compose.yaml -f {args.overlay} up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
