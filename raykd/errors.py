"""Which exceptions are the user's input (exit code 2, one line) rather than bugs."""

from __future__ import annotations

from raykd.data import DataError
from raykd.models import CheckpointError, ModelError
from raykd.spec import SpecError

USER_ERRORS: tuple[type[BaseException], ...] = (SpecError, DataError, ModelError, CheckpointError, ValueError)


def user_message(exc: BaseException) -> str | None:
    """The one-line message of a user error, also when Ray wrapped it; None for anything else.

    Ray re-raises a remote exception as ``RayTaskError`` (``.cause``) and Ray Train as
    ``TrainingFailedError`` (worker errors inside); follow those links to the original.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, USER_ERRORS) and type(e).__module__.split(".")[0] != "ray":
            return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        for attr in ("worker_failures", "error", "errors"):
            val = getattr(e, attr, None)
            if isinstance(val, dict):
                todo += [v for v in val.values() if isinstance(v, BaseException)]
            elif isinstance(val, BaseException):
                todo.append(val)
    return None
