"""The shapes a job leaves behind: ``result.json`` (:class:`JobResult`) and a sweep's
``sweep.json`` (:class:`SweepResult`).

Either file is written once, atomically, at the end of a successful run or sweep, by the
engine; the CLI, the report and the control plane read it through ``load``. A job's status
is never stored: :func:`raykd.core.status.job_status` derives it from the job's events.

Torch-free and Ray-free: importing this module loads pydantic (and the spec) only.

The models live in three modules: :mod:`~raykd.core.results.rows` (the rows both files
hold: data, teachers, ensemble, students, cache statistics),
:mod:`~raykd.core.results.job_result` (``result.json``, and the read/write every result file
shares) and
:mod:`~raykd.core.results.sweep_result` (``sweep.json``); every name is re-exported here.
"""

from __future__ import annotations

from raykd.core.results.job_result import JobResult, ResultFile
from raykd.core.results.rows import (
    LOGIT_CACHE,
    CacheStats,
    ColumnDropped,
    ColumnUsed,
    DatasetRow,
    EnsembleRow,
    EpochRow,
    GenerationRow,
    MacroF1,
    OpenRow,
    Row,
    SpanScores,
    StudentRow,
    TableRow,
    TeacherRow,
)
from raykd.core.results.sweep_result import (
    FinalStudentRow,
    SweepResult,
    TrialResources,
    TrialRow,
)

__all__ = [
    "LOGIT_CACHE", "CacheStats", "ColumnDropped", "ColumnUsed", "DatasetRow", "EnsembleRow",
    "EpochRow", "FinalStudentRow", "GenerationRow", "JobResult", "MacroF1", "OpenRow",
    "ResultFile", "Row", "SpanScores", "StudentRow", "SweepResult", "TableRow", "TeacherRow",
    "TrialResources", "TrialRow",
]
