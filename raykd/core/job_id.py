"""A job's id: the rule (a safe directory name), the ids the storage layout reserves, and
minting a fresh one. Torch-free."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from raykd.core.errors import UserError

__all__ = ["JOB_ID", "JOB_ID_PATTERN", "JOB_ID_RULE", "RESERVED_IDS", "JobIdError",
           "check_job_id", "new_job_id"]

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
