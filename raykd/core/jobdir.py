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
  directory's ``driver.lock`` for its whole life
  (:class:`~raykd.core.driver_lock.DriverLock`); a second driver of
  the same job id is refused with the holder's pid, host and start time. The kernel
  releases the lock when the driver's process ends, however it ends. (``flock`` must work
  on the storage: local disks and NFSv4 do.)
- **Readers never see a partial file.** Shared files (the teacher cache) are written to a
  unique temporary name in the target directory, then renamed into place
  (:mod:`raykd.core.atomic_files`).

Job ids (their rule, reserved names and minting) are :mod:`raykd.core.job_id`; this module
re-exports them and the atomic writers, which many modules import from here.

Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from raykd.core.atomic_files import atomic_path, ensure_dir, publish_file
from raykd.core.errors import JobDirError
from raykd.core.job_id import (
    JOB_ID,
    JOB_ID_PATTERN,
    JOB_ID_RULE,
    RESERVED_IDS,
    JobIdError,
    check_job_id,
    new_job_id,
)

if TYPE_CHECKING:
    from raykd.core.spec import JobSpec

__all__ = [
    "BUILTIN_DATASETS", "JOB_ID", "JOB_ID_PATTERN", "JOB_ID_RULE", "RESERVED_IDS", "JobIdError",
    "JobLayout", "StorageLayout", "absolute", "atomic_path", "check_job_id", "claim_job_dir",
    "ensure_dir", "new_job_dir", "new_job_id", "publish_file", "resolve_spec_paths", "spec_hash",
]

BUILTIN_DATASETS = ("mnist", "digits", "diamonds", "bbc-news", "bbc-speakers")


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
            f"job directory {str(job_dir)!r} is already claimed by another run (it has a "
            "spec.json); give a new --job-dir, or leave it out for a fresh one"
        ) from None
    except OSError as err:
        raise JobDirError(
            f"cannot write to job directory {str(job_dir)!r} ({err.strerror or err}); set storage "
            f"(or --job-dir) to a writable directory"
        ) from None
    return job_dir
