"""Where a job's files live: one directory per run, absolute paths, atomic publishing.

Three rules keep results honest:

- **One directory, one run.** A job directory is claimed by creating its ``spec.json``
  exclusively (``O_EXCL``): a directory that already holds anything, or that another run
  claims at the same moment, is refused with a :class:`~raykd.core.errors.JobDirError`. A
  generated directory (``<storage>/<name>-<UTC time>-<random>``) never repeats, even for
  two jobs of the same name started in the same second.
- **Absolute paths only.** Every path in the spec is resolved against the driver's working
  directory before anything is handed to an actor or a Ray Train worker, whose working
  directory (and node) may differ. On a multi-node cluster ``storage`` must be on storage
  shared by every node (NFS, a mounted bucket, a PVC).
- **One driver at a time.** A driver holds an exclusive lock (``flock``) on the job
  directory's ``driver.lock`` for its whole life (:class:`DriverLock`); a second driver of
  the same job id is refused with the holder's pid, host and start time. The kernel
  releases the lock when the driver's process ends, however it ends. (``flock`` must work
  on the storage: local disks and NFSv4 do.)
- **Readers never see a partial file.** Shared files (the teacher cache) are written to a
  unique temporary name in the target directory, then renamed into place.

Torch-free.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raykd.core.errors import JobDirError, UserError

if TYPE_CHECKING:
    from raykd.core.spec import JobSpec

BUILTIN_DATASETS = ("mnist", "digits", "diamonds", "bbc-news", "bbc-speakers")

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A job id: 1-128 letters, digits, ``. _ -``, starting with a letter or digit (a safe
directory name; ``.service`` and other dot-names cannot be ids)."""
JOB_ID = re.compile(JOB_ID_PATTERN)
JOB_ID_RULE = "use 1-128 letters, digits, . _ - (starting with a letter or digit)"
RESERVED_IDS = re.compile(
    r"cache"                              # <storage>/cache: the logit cache every job shares
    r"|raykd\.db.*"                       # the default SQLite database and its -wal/-shm files
    r"|.+-sweep-[0-9a-f]{8}"              # a sweep's directory when it runs without a job id
    r"|.+-\d{8}-\d{6}-[0-9a-f]{6}",        # generated ids (new_job_id)
    re.IGNORECASE)
"""Ids a client of the control plane may not choose: names the storage layout uses."""


class JobIdError(UserError, ValueError):
    """A job id that is not a safe directory name, or one the storage layout reserves."""


def check_job_id(job_id: str, *, field: str = "--job-id", reserved: bool = False) -> str:
    """``job_id`` when it is a valid id (and, with ``reserved``, not one the layout reserves).

    Raises:
        JobIdError: naming ``field``, what is wrong and what is accepted.
    """
    if not JOB_ID.match(job_id):
        raise JobIdError(f"{field} {job_id[:130]!r} is not a valid job id: {JOB_ID_RULE}")
    if reserved and RESERVED_IDS.fullmatch(job_id):
        raise JobIdError(f"{field} {job_id!r} is reserved (the service's storage uses it: "
                         "'cache', 'raykd.db*', '<name>-sweep-<8 hex>' and generated "
                         "'<name>-<date>-<time>-<6 hex>' ids); choose another")
    return job_id


def new_job_id(name: str) -> str:
    """``<name>-<UTC time>-<6 random hex>``: unique without coordination, and a valid id
    whatever the name starts with (``_x`` -> ``x-...``; an empty stem -> ``job-...``)."""
    stem = name.lstrip("_.-") or "job"
    return f"{stem}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def spec_hash(spec: JobSpec | dict[str, Any]) -> str:
    """The identity of a spec: sha256 of its canonical JSON, first 16 hex characters.

    ``spec`` is a :class:`~raykd.core.spec.JobSpec` (dumped to JSON data) or JSON data already;
    equal mappings give equal hashes whatever their key order.
    """
    data = spec if isinstance(spec, dict) else json.loads(spec.model_dump_json())
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class _Inside:
    """A fixed name inside a layout's ``root``: ``layout.spec`` is ``layout.root / "spec.json"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, layout: JobLayout | StorageLayout, owner: type | None = None) -> Path:
        return layout.root / self.name


@dataclass(frozen=True)
class JobLayout:
    """Every file and folder of one job directory, named here and nowhere else::

        <job_dir>/
          spec.json            the spec the directory belongs to (claimed with O_EXCL)
          events.jsonl         the event stream (raykd.core.events), appended by the driver
          driver.lock          flock held by the running driver (DriverLock)
          data.json            what the job's data was (digest, sizes, classes)
          preprocessing.json   the fitted preprocessing that predict applies
          result.json          a run's result, written atomically at the end
          ray.log              what Ray printed while `raykd run` ran (the console keeps raykd's)
          sweep.json, trials.csv, heatmap_w_t.png, alpha.png, best_student.safetensors
                               a sweep's result, its trials, plots and final student
          teachers/            teacher-<i>.safetensors (trained here), teacher-<i>-given.safetensors
          students/            <name>.safetensors, <name>-hf/, student-<s>-g<g>.json records
          student_states/      per-epoch training state of the student actor (resume)
          ray_train/           Ray Train's run folders (students on Ray Train)
          logits/              the job's own logit cache when cache.enabled is false
          tune/, tune_train/   Ray Tune's experiment folder and its trials' Ray Train storage
          fault-*.fired        fault-injection markers (tests only)
    """

    root: Path
    SPEC: ClassVar[str] = "spec.json"
    EVENTS: ClassVar[str] = "events.jsonl"
    LOCK: ClassVar[str] = "driver.lock"
    DATA: ClassVar[str] = "data.json"
    PREPROCESSING: ClassVar[str] = "preprocessing.json"
    RESULT: ClassVar[str] = "result.json"
    SWEEP: ClassVar[str] = "sweep.json"
    TRIALS: ClassVar[str] = "trials.csv"
    TUNE: ClassVar[str] = "tune"
    RAY_LOG: ClassVar[str] = "ray.log"
    HEATMAP: ClassVar[str] = "heatmap_w_t.png"
    ALPHA_PLOT: ClassVar[str] = "alpha.png"
    BEST_STUDENT: ClassVar[str] = "best_student.safetensors"
    RESULTS: ClassVar[tuple[str, str]] = (RESULT, SWEEP)
    """The files that end a finished job: a run's, then a sweep's."""

    spec = _Inside(SPEC)
    events = _Inside(EVENTS)
    lock = _Inside(LOCK)
    data = _Inside(DATA)
    preprocessing = _Inside(PREPROCESSING)
    result = _Inside(RESULT)
    sweep = _Inside(SWEEP)
    trials = _Inside(TRIALS)
    heatmap = _Inside(HEATMAP)
    alpha_plot = _Inside(ALPHA_PLOT)
    best_student = _Inside(BEST_STUDENT)
    tune = _Inside(TUNE)
    ray_log = _Inside(RAY_LOG)
    teachers = _Inside("teachers")
    students = _Inside("students")
    student_states = _Inside("student_states")
    ray_train = _Inside("ray_train")
    logits = _Inside("logits")
    tune_train = _Inside("tune_train")

    def fault_marker(self, name: str) -> Path:
        """The file a fault switch leaves once it fired (``name``: ``teacher-0``, ``0-g1``)."""
        return self.root / f"fault-{name}.fired"

    def teacher(self, index: int, *, given: bool = False) -> Path:
        """A teacher's checkpoint: trained here, or a given one converted to safetensors."""
        return self.teachers / f"teacher-{index}{'-given' if given else ''}.safetensors"

    def student(self, name: str) -> Path:
        """A student's checkpoint (``name``: ``student-<s>-g<g>`` and the like)."""
        return self.students / f"{name}.safetensors"

    def student_record(self, student: int, generation: int) -> Path:
        """The record a finished student leaves for a resumed run."""
        return self.students / f"student-{student}-g{generation}.json"


@dataclass(frozen=True)
class StorageLayout:
    """What lives directly under ``storage``: one directory per job id, the shared logit
    cache, the control plane's private folder and its default database."""

    root: Path
    CACHE: ClassVar[str] = "cache"
    SERVICE: ClassVar[str] = ".service"
    DATABASE: ClassVar[str] = "raykd.db"

    def job(self, job_id: str) -> JobLayout:
        """The layout of job ``job_id``'s directory, ``<storage>/<job_id>`` (the id checked)."""
        return JobLayout(self.root / check_job_id(job_id, field="job id"))

    cache = _Inside(CACHE)
    service = _Inside(SERVICE)
    """The control plane's own files (token, submitted specs): never a job's input."""
    database = _Inside(DATABASE)

    def submitted_spec(self, job_id: str) -> Path:
        """The spec the control plane hands to ``raykd run`` for ``job_id``."""
        return self.service / "specs" / f"{check_job_id(job_id, field='job id')}.json"


def absolute(path: str | Path, base: Path | None = None) -> Path:
    """``path`` with ``~`` expanded, made absolute against ``base`` (default: the cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base or Path.cwd()) / p


def resolve_spec_paths(spec: JobSpec, base: Path | None = None) -> JobSpec:
    """The same spec with ``storage``, ``cache.dir``, checkpoints and data files absolute."""
    base = base or Path.cwd()

    def fix(value: str | None) -> str | None:
        return None if value is None else str(absolute(value, base))

    dataset = spec.data.dataset
    if dataset not in BUILTIN_DATASETS and ("/" in dataset or Path(dataset).suffix
                                            or absolute(dataset, base).is_dir()):
        dataset = str(absolute(dataset, base))  # a file or folder; an unknown name stays as typed
    return spec.model_copy(update={
        "storage": fix(spec.storage),
        "cache": spec.cache.model_copy(update={"dir": fix(spec.cache.dir)}),
        "data": spec.data.model_copy(update={"dataset": dataset}),
        "teachers": [t.model_copy(update={"checkpoint": fix(t.checkpoint)}) for t in spec.teachers],
        "student": spec.student.model_copy(update={"checkpoint": fix(spec.student.checkpoint)}),
    })


def new_job_dir(storage: str | Path, name: str) -> Path:
    """A fresh directory under ``storage``, named by :func:`new_job_id`."""
    return absolute(storage) / new_job_id(name)


def claim_job_dir(job_dir: Path, spec_json: str) -> Path:
    """Create ``job_dir`` (absolute) and claim it for one run by writing ``spec.json``.

    Raises:
        JobDirError: the path is a file, cannot be created or written, or already holds
            another run's files (a job directory belongs to exactly one run).
    """
    job_dir = absolute(job_dir)
    if job_dir.exists() and not job_dir.is_dir():
        raise JobDirError(f"job directory {str(job_dir)!r} is a file; give a directory path")
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JobDirError(
            f"cannot create job directory {str(job_dir)!r} ({err.strerror or err}); set storage "
            f"(or --job-dir) to a writable directory"
        ) from None
    if any(p.name != JobLayout.SPEC for p in job_dir.iterdir()):
        raise JobDirError(
            f"job directory {str(job_dir)!r} already holds another run's files; a job directory "
            f"belongs to one run: give a new --job-dir, or leave it out for a fresh one"
        )
    try:
        with open(JobLayout(job_dir).spec, "x") as f:
            f.write(spec_json)
    except FileExistsError:
        raise JobDirError(
            f"job directory {str(job_dir)!r} is already claimed by another run (it has a spec.json); "
            f"give a new --job-dir, or leave it out for a fresh one"
        ) from None
    except OSError as err:
        raise JobDirError(
            f"cannot write to job directory {str(job_dir)!r} ({err.strerror or err}); set storage "
            f"(or --job-dir) to a writable directory"
        ) from None
    return job_dir


def ensure_dir(path: Path, what: str) -> Path:
    """``mkdir -p`` that names ``what`` (a spec field) when it fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise JobDirError(
            f"{what}={str(path)!r} cannot be created ({err.strerror or err}); give a writable directory"
        ) from None
    return path


@contextmanager
def atomic_path(dst: str | Path) -> Iterator[Path]:
    """A unique temporary path beside ``dst``; renamed over ``dst`` when the block succeeds.

    Concurrent writers of one ``dst`` never share a temporary file; a reader sees either
    the old file or a whole new one; a failed write leaves no temporary file behind. The
    file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s 0600,
    so other users of a shared cache can read it.
    """
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (:func:`atomic_path`); returns ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst




class DriverLock:
    """The exclusive lock a job's driver holds on ``<job_dir>/driver.lock`` while it runs.

    The file holds the holder's pid, host and start time (UTC, ISO 8601), for the error a
    second driver gets. :meth:`release` (or the end of the process) lets it go.
    """

    def __init__(self, job_dir: Path, job_id: str) -> None:
        self.fd: int | None = None
        path = job_dir / JobLayout.LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise JobDirError(f"cannot open {str(path)!r} ({err.strerror or err}); the job "
                              "directory must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise JobDirError(f"job {job_id!r} in {job_dir} is already running: its driver "
                              f"{holder} holds {JobLayout.LOCK}; wait for it to end (or stop it) "
                              "before running this job id again") from None
        except OSError as err:
            os.close(fd)
            raise JobDirError(f"cannot lock {str(path)!r} ({err.strerror or err}); the job "
                              "directory must be on storage that supports flock") from None
        self.fd = fd
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)

    def release(self) -> None:
        """Let the lock go (idempotent); the file stays, empty of meaning."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def __del__(self) -> None:
        self.release()


def _holder(fd: int) -> str:
    """``pid N on host H since T`` from a lock file's content (as far as it can be read)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {int(info['pid'])} on host {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "(another process, just starting)"
