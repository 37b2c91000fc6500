"""``result.json`` (:class:`JobResult`), and what every result file shares
(:class:`ResultFile`: the job's identity, data and spec; read and written whole, atomically).
Torch-free and Ray-free."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field

from raykd.core.atomic_files import atomic_path
from raykd.core.jobdir import JobLayout
from raykd.core.results.rows import (
    LOGIT_CACHE,
    CacheStats,
    DatasetRow,
    EnsembleRow,
    OpenRow,
    StudentRow,
    TeacherRow,
)
from raykd.core.spec import JobSpec

__all__ = ["JobResult", "ResultFile"]


class ResultFile(OpenRow):
    """What every job's result file holds (its identity, the data, the spec), read and
    written whole."""

    FILE: ClassVar[str] = JobLayout.RESULT

    job_id: str = Field(description="The job's id (its directory name).")
    spec_hash: str = Field(
        description="Identity of the spec (see :func:`raykd.core.jobdir.spec_hash`)."
    )
    attempts: int = Field(default=1, ge=1, description="Runs it took (1 + resumes).")
    versions: dict[str, str] = Field(
        default_factory=dict, description="Versions of raykd, python, torch and ray that ran it."
    )
    job: str = Field(description="The spec's name.")
    job_dir: str = Field(description="Absolute path of the job directory.")
    damaged_files: list[str] = Field(
        default_factory=list, description="Damaged cache entries this job found (failed their "
        "checksum or unreadable): never used, computed again (see the job's messages).")
    dataset: DatasetRow = Field(description="The data and its split.")
    spec: JobSpec = Field(description="The spec as run (paths resolved).")
    timings: dict[str, float] = Field(
        default_factory=dict, description="Wall seconds per stage, and the total; the "
        "student_* entries are parts of students (student_actor_start: waiting for the student "
        "actor's process; student_validation and student_state_save: after each epoch; "
        "student_scoring: the best weights on val and test)."
    )

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read and validate the file (a job directory is taken to mean its file, ``FILE``).

        Args:
            path: The file, or the job directory holding it.

        Returns:
            The validated result.
        """
        path = Path(path)
        if path.is_dir():
            path = path / cls.FILE
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def write(self, path: str | Path) -> Path:
        """Write atomically: a temporary file in the same directory, then ``os.replace``.

        Args:
            path: The file, or the job directory to write ``FILE`` into.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.is_dir():
            path = path / self.FILE

        text = json.dumps(self.model_dump(mode="json"), indent=2)
        # usual permissions (not mkstemp's 0600): the service may run as another user
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path


class JobResult(ResultFile):
    """``<job_dir>/result.json``: everything a finished run measured."""

    teachers: list[TeacherRow] = Field(description="The ensemble's members.")
    ensemble: EnsembleRow = Field(description="The ensemble's accuracy.")
    teacher_placement: list[dict[str, Any]] = Field(
        default_factory=list, description="Where each teacher actor ran (diagnostics)."
    )
    online_teachers: Literal["in_process", "actors"] | None = Field(
        default=None, description="How the teachers served logits online (augmentation): in "
        "the student workers' processes or as actors; null without augmentation (every logit "
        "from the cache)."
    )
    student_runner: Literal["driver", "actor", "train"] | None = Field(
        default=None, description="Where the students trained (scaling.student_runner, "
        "decided once Ray was up): in the driver's own process, on the job's student actor, "
        "or a Ray Train fit each; null in results from before this field."
    )
    logit_cache: dict[str, dict[str, CacheStats]] = Field(
        default_factory=dict, description=LOGIT_CACHE
    )
    students: list[StudentRow] = Field(description="One row per method entry.")
