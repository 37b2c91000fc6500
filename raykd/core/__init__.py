"""The torch-free floor of raykd, which the engine, the control plane and the CLI stand on.

Each concept of a job has one home here:

- :mod:`raykd.core.jobdir`: the spec hash, the layout of a job directory and of storage,
  claiming a directory; :mod:`raykd.core.job_id`: job ids (rule, reserved names, minting);
  :mod:`raykd.core.driver_lock`: one driver per job; :mod:`raykd.core.atomic_files`: files
  readers never see partial.
- :mod:`raykd.core.states`: every state a job can be in and the sets that group them.
- :mod:`raykd.core.status`: a job's status (state, stage, progress, attempt) from its events.
- :mod:`raykd.core.spec` / :mod:`raykd.core.spec_io`: the job spec (pydantic; a package
  with one module per section) and the one reader of spec files and texts.
- :mod:`raykd.core.events`: the typed events a job appends to ``events.jsonl``.
- :mod:`raykd.core.results`: ``result.json`` and ``sweep.json`` (a package: their rows,
  ``job_result``, ``sweep_result``).
- :mod:`raykd.core.errors`, :mod:`raykd.core.allowlist`, :mod:`raykd.core.faults`: user
  errors, the model allowlist, fault injection.

Nothing here imports torch, Ray or any other part of raykd (tests/unit/test_layers.py).
"""
