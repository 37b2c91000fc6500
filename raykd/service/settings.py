"""The service's settings: ``RAYKD_*`` environment variables (or a ``.env``-style file).

Secure by default: binds 127.0.0.1; every route but ``/healthz`` needs a bearer token
(``RAYKD_TOKEN``, or named per-user tokens in ``RAYKD_USERS``); a submitted spec may only
read built-in datasets or files under ``RAYKD_DATA_ROOTS`` and always writes under
``RAYKD_STORAGE``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    allow_fault_injection: bool = Field(default=False, description=(
        "Accept specs with `faults:` (fault injection, for reliability tests only) and "
        "let their drivers fire them. Off: such a spec is refused with a 422."))

    @field_validator("token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("an empty token would let anyone in: set a real token, or leave "
                             "RAYKD_TOKEN unset and `raykd serve` generates one")
        return value

    @field_validator("users")
    @classmethod
    def _users_valid(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not secret.get_secret_value().strip():
                raise ValueError(f"user {name!r} has an empty token: give every user a real one")
            if name == "admin" or not name.strip():
                raise ValueError(f"user name {name!r} is reserved or empty: 'admin' is the "
                                 "RAYKD_TOKEN holder; choose another name")
        return value

    @field_validator("storage")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    def db_url(self) -> str:
        """The database URL in use."""
        return self.database_url or f"sqlite:///{self.storage / 'raykd.db'}"
