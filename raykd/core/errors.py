"""raykd's user errors: what the user's input got wrong (exit code 2, one line), not bugs.

Every check of user input raises a subclass of :class:`UserError` at the edge where the
input is read (spec, data, models, checkpoints, cluster resources, job directories).
Everything else, including a ``ValueError`` from numpy, torch or Ray, is a bug and keeps
its traceback. This module imports nothing heavy, so every layer can use it.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error caused by the user's input; its message names the field and value."""


class SpecError(UserError, ValueError):
    """A spec that cannot be read or does not validate; the message is one line per problem."""


class ResourceError(UserError, ValueError):
    """The cluster cannot hold what the spec asks for."""


class JobDirError(UserError, ValueError):
    """A job directory that cannot be used: unwritable, a file, or another job's."""


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
        if isinstance(e, UserError):
            text = str(e).strip()
            return text.splitlines()[0] if text else type(e).__name__
        # explicit links only: a bug raised while a user error was being handled has the
        # user error as __context__, and must stay a bug (with its traceback)
        todo += [getattr(e, "cause", None), e.__cause__]
        for attr in ("worker_failures", "error", "errors"):
            val = getattr(e, attr, None)
            if isinstance(val, dict):
                todo += [v for v in val.values() if isinstance(v, BaseException)]
            elif isinstance(val, BaseException):
                todo.append(val)
    return None


class ModelError(UserError, ValueError):
    """An architecture that cannot be built for the given data (raised by the models'
    registry, the user's models, and the reader of a Hugging Face folder in ``raykd.data``)."""
