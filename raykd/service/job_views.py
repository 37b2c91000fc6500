"""The API's views of stored jobs (:class:`JobPublic`, :class:`JobPage`), for the REST
routes and the dashboard alike: labels and queue positions read once per list, not per row."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from raykd.service.schemas import JobPage, JobPublic
from raykd.service.state import ServiceState
from raykd.service.tables import JobRow

_PUBLIC_LIST = TypeAdapter(list[JobPublic])


def public(state: ServiceState, row: JobRow, *, full: bool = False) -> JobPublic:
    """The API view of a stored job."""
    return public_view(row, full=full, labels=state.store.labels([row.id])[row.id],
                       position=state.store.queue_position(row))


def public_many(state: ServiceState, rows: list[Any]) -> list[JobPublic]:
    """The list view of ``rows`` (:class:`JobSummary` rows of ``store.page``)."""
    return _PUBLIC_LIST.validate_python(_summaries(state, rows))


def page(service: ServiceState, **query: Any) -> JobPage:
    """One page of ``store.page(**query)`` (validated at once, not one JobPublic per row);
    ``service``, not ``state``: the query has a ``state`` filter."""
    rows, nxt = service.store.page(**query)
    return JobPage.model_validate({"items": _summaries(service, rows), "next_cursor": nxt})


def _summaries(state: ServiceState, rows: list[Any]) -> list[dict[str, Any]]:
    """``rows`` as :class:`JobPublic` fields, to validate all at once: labels and queue
    positions in one query each, not per row."""
    ids = [r.id for r in rows]
    labels, positions = state.store.labels(ids), state.store.queue_positions(ids)
    out = []
    for r in rows:
        item = r._asdict()
        item["latest_metrics"] = item["latest_metrics"] or {}
        item["labels"], item["queue_position"] = labels[r.id], positions.get(r.id)
        out.append(item)
    return out


def public_view(row: Any, *, full: bool, labels: dict[str, str],
                position: int | None) -> JobPublic:
    """``row`` (a :class:`JobRow`, or a row with its fields) as the API shows it."""
    return JobPublic(
        id=row.id, name=row.name, kind=row.kind, owner=row.owner, state=row.state,
        priority=row.priority, max_run_s=row.max_run_s, labels=labels, queue_position=position,
        stage=row.stage, progress=row.progress, latest_metrics=row.latest_metrics or {},
        error=row.error, note=row.note, attempts=row.attempts, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at,
        spec=row.spec if full else None, result=row.result if full else None,
    )
