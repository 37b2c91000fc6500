"""Alembic environment: upgrades the database named by the config's ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from raykd.service.database import make_engine
from raykd.service.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(str(config.get_main_option("sqlalchemy.url")))
    engine.pool = pool.NullPool(engine.pool._creator)  # one connection, closed after
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
