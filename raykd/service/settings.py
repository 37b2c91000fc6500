"""The service's settings: ``RAYKD_*`` environment variables (or a ``.env``-style file).

Secure by default: binds 127.0.0.1; every route but ``/healthz`` needs a bearer token
(``RAYKD_TOKEN``, or named per-user tokens in ``RAYKD_USERS``); a submitted spec may only
read built-in datasets or files under ``RAYKD_DATA_ROOTS`` and always writes under
``RAYKD_STORAGE``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from raykd.core.jobdir import StorageLayout

MIN_TOKEN_CHARS = 32
TOKEN_HINT = ("e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")


def _check_token(whose: str, token: str) -> None:
    """A token must be at least MIN_TOKEN_CHARS characters (the error never shows it)."""
    if not token.strip():
        raise ValueError(f"{whose} has an empty token, which would let anyone in: give a token of "
                         f"at least {MIN_TOKEN_CHARS} characters ({TOKEN_HINT})")
    if len(token.strip()) < MIN_TOKEN_CHARS:
        raise ValueError(f"{whose}: the token has {len(token.strip())} characters; a token needs at "
                         f"least {MIN_TOKEN_CHARS} ({TOKEN_HINT})")


class Settings(BaseSettings):
    """Configuration of ``raykd serve``."""

    model_config = SettingsConfigDict(env_prefix="RAYKD_", env_file=None, extra="ignore")

    token: SecretStr | None = Field(
        default=None, description="The admin bearer token (sees every job). Required unless "
                                  "RAYKD_USERS is set; `raykd serve` generates one if neither is.")
    users: dict[str, SecretStr] = Field(
        default_factory=dict, description='Named user tokens as JSON, {"alice": "token", ...}: each '
                                          "user sees only their own jobs.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<storage>/raykd.db.")
    storage: Path = Field(default=Path("raykd-runs"),
                          description="Where jobs write (shared by every Ray node).")
    ray_address: str | None = Field(
        default=None, description="Ray dashboard/job API address (http://host:8265); unset: "
                                  "`raykd serve` starts and owns a local Ray head.")
    ray_token: SecretStr | None = Field(
        default=None, description="Ray's bearer token (RAY_AUTH_MODE=token clusters); default: Ray's "
                                  "own RAY_AUTH_TOKEN / token file.")
    ray_num_cpus: int | None = Field(default=None, ge=1, description="CPUs of the owned local head.")
    host: str = Field(default="127.0.0.1", description="Bind address (loopback unless set).")
    port: int = Field(default=8000, ge=0, le=65535, description="Bind port (0: any free port).")
    max_running: int = Field(default=1, ge=1, le=1000, description="Jobs on Ray at once; the rest queue.")
    data_roots: list[Path] = Field(default_factory=list,
                                   description="Directories a submitted spec may read data/checkpoints from.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest accepted request body.")
    paused: bool = Field(default=False, description="Accept and queue jobs but start none (maintenance).")
    threads: int = Field(default=8, ge=1, le=256, description=(
        "Worker threads for the API's blocking work (database reads, Ray calls). Few is "
        "faster: measured with 50 clients on 2 cores, 4-8 threads served ~40% more requests "
        "than 40 (the GIL is shared by all of them)."))
    poll_s: float = Field(default=0.5, gt=0, le=60, description="Scheduler/follower period.")
    # per-user limits (the admin is held only to what the cluster can place and to max_run_s_cap)
    max_jobs_per_user: int = Field(default=20, ge=1, le=100_000, description=(
        "Jobs one user may have queued or running at once; more is a 422."))
    max_workers: int = Field(default=8, ge=1, le=1024, description="Largest scaling.num_workers a user may ask for.")
    max_cpus_per_worker: float = Field(default=16.0, gt=0, le=256, description=(
        "Largest scaling.cpus_per_worker a user may ask for."))
    max_gpus: int = Field(default=4, ge=0, le=1024, description=(
        "GPUs one user's job may hold (scaling.use_gpu: true holds one per worker; 0: no GPU jobs)."))
    max_trials: int = Field(default=100, ge=1, le=100_000, description="Largest sweep.num_samples a user may ask for.")
    max_epochs: int = Field(default=200, ge=1, le=1000, description=(
        "Largest train.epochs and teacher_train.epochs a user may ask for."))
    max_teachers: int = Field(default=16, ge=1, le=64, description="Most teachers in one user's job.")
    max_hidden_units: int = Field(default=8192, ge=1, le=65536, description=(
        "Largest hidden layer width (mlp hidden, cnn width) a user's model may have."))
    max_hidden_layers: int = Field(default=8, ge=1, le=16, description="Most hidden layers of a user's mlp.")
    max_user_priority: int = Field(default=10, ge=-100, le=100, description=(
        "Highest priority a user may give (submit or PATCH); only the admin may set more."))
    default_max_run_s: float = Field(default=24 * 3600.0, gt=0, description=(
        "A job's deadline when it names none: past it on Ray, the job is stopped (timed_out)."))
    max_run_s_cap: float = Field(default=7 * 24 * 3600.0, gt=0, description=(
        "Largest max_run_s a job may ask for."))
    check_cluster_fit: bool = Field(default=True, description=(
        "Refuse at submission a job the Ray cluster can never place (more CPUs or GPUs than it "
        "has). Turn off for an autoscaling cluster that grows on demand."))
    cluster_view_ttl_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "How long the service trusts its view of the cluster's resources before asking Ray again."))
    auth_failures_per_minute: int = Field(default=10, ge=1, le=1_000_000, description=(
        "Failed logins and wrong bearer tokens one client address may send per minute; past "
        "it, that address is answered 429 (with Retry-After) until a minute has passed."))
    sessions_per_user: int = Field(default=20, ge=1, le=10_000, description=(
        "Dashboard sessions one user may hold; a new login ends that user's oldest."))
    session_idle_s: float = Field(default=12 * 3600.0, gt=0, description=(
        "A dashboard session ends after this long without a request."))
    session_max_s: float = Field(default=7 * 24 * 3600.0, gt=0, description=(
        "A dashboard session ends this long after its login, however much it is used."))
    retention_days: float | None = Field(default=None, gt=0, le=36500, description=(
        "Delete finished jobs (their records, events and directories) this many days after they "
        "finished; each deletion is in the audit log. Unset: keep every job."))
    ray_timeout_s: float = Field(default=20.0, gt=0, le=300, description=(
        "Deadline of every request to Ray's job API: a Ray that does not answer within it "
        "counts as unreachable (the API answers 503 for what needs Ray; nothing else waits)."))
    driver_command: str = Field(default="raykd", min_length=1, description=(
        "The command that runs `run SPEC --job-id ID` on an external Ray cluster (e.g. "
        "`/opt/venv/bin/python -m raykd`). The service's own head always runs drivers with "
        "the service's interpreter (`<python> -m raykd`)."))
    lease_s: float = Field(default=60.0, gt=0, le=3600, description=(
        "The scheduler's lease on the database: one service schedules and follows jobs; "
        "another on the same database serves the API and takes over once the lease expires "
        "(at once when the holder was a process of the same host that is gone). At least 3x "
        "ray_timeout_s: the holder renews it between Ray calls, each of which may take that long."))
    allow_fault_injection: bool = Field(default=False, description=(
        "Accept specs with `faults:` (fault injection, for reliability tests only) and "
        "let their drivers fire them. Off: such a spec is refused with a 422."))

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_token("RAYKD_TOKEN", value.get_secret_value())
        return value

    @field_validator("users")
    @classmethod
    def _users_valid(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if name == "admin" or not name.strip():
                raise ValueError(f"user name {name!r} is reserved or empty: 'admin' is the "
                                 "RAYKD_TOKEN holder; choose another name")
            _check_token(f"user {name!r}", secret.get_secret_value())
        return value

    @model_validator(mode="after")
    def _lease_outlasts_ray_calls(self) -> Settings:
        if self.lease_s < 3 * self.ray_timeout_s:
            raise ValueError(f"lease_s ({self.lease_s:g}) must be at least 3 x ray_timeout_s "
                             f"({self.ray_timeout_s:g}): a scheduler waiting on Ray could lose its "
                             "lease to another service mid-tick; raise RAYKD_LEASE_S or lower "
                             "RAYKD_RAY_TIMEOUT_S")
        return self

    @field_validator("storage")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def layout(self) -> StorageLayout:
        """What lives under :attr:`storage`: job directories, the cache, the service's files."""
        return StorageLayout(self.storage)

    def db_url(self) -> str:
        """The database URL in use."""
        return self.database_url or f"sqlite:///{self.layout.database}"
