"""The prefix every job shares: data -> model checks -> Ray -> splits -> teachers.

``run_job``, ``run_sweep`` and the benchmarks all go through :func:`prepare` (or its
parts), so data is checked, placed and taught the same way everywhere:

1. data: load and split, fingerprint each split; check every model against it;
2. Ray: join ``RAY_ADDRESS`` or start a local Ray; put each split in the object store once;
3. teachers: one Ray actor each (own GPU when there are GPUs); train those without a
   checkpoint in parallel (a teacher an earlier attempt of this job trained, or another
   job published to the cache, is loaded instead); each teacher's logits over
   train/val/test from the logit cache or computed once; teacher and ensemble accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raykd.core.allowlist import allowlist_env
from raykd.core.events import TeacherReady
from raykd.core.faults import teacher_fault
from raykd.core.jobdir import StorageLayout, ensure_dir, publish_file
from raykd.core.spec import JobSpec, SpecError
from raykd.data import DataError, Dataset
from raykd.data.paths import checked_checkpoint
from raykd.engine.context import Job
from raykd.losses.topk import TopK, dense
from raykd.models import CheckpointError, load_checkpoint
from raykd.train.steps import accuracy

# Ray Train polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default):
# each epoch report would wait for it.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
Logits = np.ndarray | TopK


def ensure_ray(*, num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS, or start a local Ray (token auth stays on)."""
    from raykd.console import quiet_ray_env

    quiet_ray_env()  # too late for a Ray imported already: `raykd` sets it at its start
    import ray

    if ray.is_initialized():
        return
    env = {k: os.environ.get(k, v) for k, v in RAY_ENV.items()}
    os.environ.update(env)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True, logging_level="WARNING")
    else:
        # The dashboard stays on loopback; Ray Train's state queries need it. The workers
        # import what this process can (user models) and see its model allowlist.
        env |= {**worker_import_path(), **allowlist_env()}
        ray.init(num_cpus=num_cpus, dashboard_host="127.0.0.1", log_to_driver=True,
                 logging_level="WARNING", runtime_env={"env_vars": env})


def worker_import_path() -> dict[str, str]:
    """``{"PYTHONPATH": ...}``: this process's import path outside the interpreter's own
    folders (the working directory, ``PYTHONPATH``, folders added to ``sys.path``), so that a
    local Ray's workers can import an allowlisted user model as the driver does. A cluster
    joined by ``RAY_ADDRESS`` gets code the Ray way: ``ray job submit --working-dir``."""
    import sys

    own = tuple(p for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p)
    entries = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    extra = [p for p in dict.fromkeys(entries) if os.path.isdir(p) and not p.startswith(own)]
    return {"PYTHONPATH": os.pathsep.join(extra)} if extra else {}


def put_splits(data: Dataset) -> dict[str, Any]:
    """Every split's arrays in the object store, once: workers and actors map them zero-copy."""
    import ray

    refs: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        refs[f"x_{split}"] = ray.put(part.x)
        refs[f"y_{split}"] = ray.put(part.y)
    return refs


def check_models(spec: JobSpec, data: Dataset) -> None:
    """Every declared class count, every checkpoint and ``cache.topk`` must agree with the data."""
    topk = spec.cache.topk
    if topk is not None and topk >= data.num_classes:
        raise SpecError(
            f"cache.topk={topk} must be below the number of classes ({data.num_classes}) of dataset "
            f"{spec.data.dataset!r}; give 1..{data.num_classes - 1}, or null for dense logits"
        )
    named = [(f"teachers[{i}]", t) for i, t in enumerate(spec.teachers)] + [("student", spec.student)]
    check_text_models(spec, data, named)
    for where, t in named:
        declared = t.model.num_classes
        if declared is not None and declared != data.num_classes:
            raise CheckpointError(
                f"{where}.model.num_classes={declared} but dataset {spec.data.dataset!r} has labels "
                f"in [0, {data.num_classes}) ({data.num_classes} classes)"
            )
        if t.checkpoint is not None:
            load_checkpoint(checked_checkpoint(t.checkpoint), config=t.model.model_dump(),
                            input_shape=data.input_shape,
                            num_classes=data.num_classes)


def check_text_models(spec: JobSpec, data: Dataset, named: list[tuple[str, Any]]) -> None:
    """Text data takes ``name: hf`` models only, and ``hf`` models take text data only; text is
    never augmented (the shifts and noise are for images)."""
    text = getattr(data, "text", None) is not None or getattr(data, "spans", None) is not None
    for where, t in named:
        if text and t.model.name != "hf":
            raise SpecError(
                f"{where}.model.name={t.model.name!r}: dataset {spec.data.dataset!r} is text, which "
                "only Hugging Face models read; use name: hf (a path or a config and tokenizer)")
        if not text and t.model.name == "hf":
            raise SpecError(
                f"{where}.model.name='hf' reads text, but dataset {spec.data.dataset!r} is not text; "
                "use bbc-news, or a .csv/.parquet/.jsonl file with data.text_column")
    if text and spec.data.augment:
        raise SpecError("data.augment (random shifts and noise) applies to images and tables, not "
                        f"to the text of {spec.data.dataset!r}; remove data.augment")
    if getattr(data, "spans", None) is not None:
        check_span_models(spec, data, named)


def check_span_models(spec: JobSpec, data: Dataset, named: list[tuple[str, Any]]) -> None:
    """Span windows are made by one tokenizer (the student's): every model must read the same
    tokenizer files; span logits are cached dense-unpadded, never top-k."""
    from raykd.data.span_data import tokenizer_sha256

    assert data.spans is not None
    if spec.cache.topk is not None:
        raise SpecError(f"cache.topk applies to classification; span data {spec.data.dataset!r} "
                        "caches the valid positions' logits in float16: remove cache.topk")
    length = data.spans.max_length
    for where, t in named:
        model = t.model.model_dump()
        limit = position_limit(model) if t.model.name == "hf" else None
        if limit is not None and length > limit:
            raise SpecError(f"data.max_length={length}: {where}.model has position embeddings for "
                            f"{limit} tokens; give data.max_length <= {limit}")
        if t.model.name == "hf" and tokenizer_sha256(model) != data.spans.tokenizer_sha256:
            raise SpecError(
                f"span tasks need one tokenizer: {where}.model reads other tokenizer files than "
                f"the student's {data.spans.tokenizer!r}, which cut {spec.data.dataset!r} into "
                "windows; give every teacher that tokenizer (model.tokenizer) or a model trained "
                "with it")


def position_limit(model: dict[str, Any]) -> int | None:
    """The longest token window an ``hf`` model entry takes: ``max_position_embeddings`` of
    its config mapping (transformers' default 512 when absent) or of its folder's
    config.json, less the positions RoBERTa-like models reserve; None when unknown."""
    import json as _json

    from raykd.models.hf import POSITION_OFFSET
    from raykd.models.hf_files import CONFIG, _open, resolve_folder

    config = model.get("config")
    if model.get("path") is not None:
        with _open(resolve_folder(str(model["path"]), "path"), CONFIG) as handle:
            config = _json.load(handle)
    if not isinstance(config, dict):
        return None
    positions = config.get("max_position_embeddings", 512)
    if not isinstance(positions, int):
        return None
    return positions - POSITION_OFFSET.get(str(config.get("model_type")), 0)


def load_data(job: Job) -> Dataset:
    """Load and split the spec's data; check the models; report the columns of a table.

    See :func:`raykd.engine.job_data.load_job_data` (``data.features``, the column report,
    ``preprocessing.json``).
    """
    from raykd.engine.job_data import load_job_data

    ensure_dir(job.job_dir, "the job directory")  # its preprocessing.json is written there
    data = load_job_data(job)
    check_same_data(job, data)
    return data




def check_same_data(job: Job, data: Dataset) -> None:
    """A job resumes only on the data it started with (its splits' fingerprints, kept in
    ``<job_dir>/data.json`` by the first attempt that loaded them).

    A data file changed between attempts would otherwise mix teachers and students of the
    old data with preprocessing fitted on the new.

    Raises:
        JobDirError: when this attempt's fingerprints differ from the recorded ones.
    """
    from raykd.core.errors import JobDirError
    from raykd.core.jobdir import atomic_path

    now = {s: getattr(data, s).fingerprint for s in ("train", "val", "test")}
    path = job.layout.data
    if path.is_file():
        before = json.loads(path.read_text())
        if before != now:
            changed = [s for s in now if before.get(s) != now[s]]
            raise JobDirError(
                f"job {job.job_id!r} in {job.job_dir}: its data {job.spec.data.dataset!r} changed "
                f"since it started (the {', '.join(changed)} split(s) differ); a job id resumes "
                f"only on the same data: restore the data, or give a new --job-id (or --job-dir)")
        return
    job.job_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(now, indent=2))


def resolve_gpu(setting: bool | str) -> bool:
    """``auto`` means: use GPUs when the cluster has any."""
    import ray

    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def cache_dir(spec: JobSpec) -> str:
    """The shared cache directory: ``cache.dir``, or ``<storage>/cache``."""
    return spec.cache.dir or str(StorageLayout(Path(spec.storage)).cache)


def logit_cache(job: Job) -> Any:
    """The logit cache: shared by jobs, or (``cache.enabled: false``) this job's own."""
    from raykd.teachers.cache import LogitCache

    spec = job.spec
    if not spec.cache.enabled:  # no sharing; a resumed attempt of this job still reuses them
        return LogitCache(ensure_dir(job.layout.logits, "the job directory"))
    return LogitCache(ensure_dir(Path(cache_dir(spec)), "cache.dir" if spec.cache.dir else "storage"))


@dataclass
class TeacherSet:
    """Per-teacher logits (M, N, C) of each split, and the live pool when serving online.

    The logits are in the form the spec asks for (dense, or top-k with ``cache.topk``) in
    every split; accuracies read them through :func:`raykd.losses.topk.dense`.
    """

    logits: dict[str, Logits]
    checkpoints: list[str]
    pool: Any | None = None
    _train_ref: Any = None

    def train_ref(self) -> Any:
        """The train logits in the object store, put once and shared by every student."""
        import ray

        if self._train_ref is None:
            self._train_ref = ray.put(self.logits["train"])
        return self._train_ref


@dataclass
class Prepared:
    """What the job prefix hands to students and sweeps."""

    data: Dataset
    refs: dict[str, Any]
    cache: Any
    teachers: TeacherSet


def prepare(job: Job, *, cache: Any = None, on_ray: Callable[[Dataset], None] | None = None) -> Prepared:
    """Data, Ray, splits and teachers, in that order (see the module docstring).

    ``on_ray(data)`` runs once Ray is up and the data loaded, before any teacher work: the
    job checks there that its students fit the cluster and the data (a job that cannot
    run fails before it trains or caches a teacher), and starts its student actor, so that
    its process starts while the teachers train.
    """
    data = load_data(job)
    with job.stage("ray_init"):
        ensure_ray()
    if on_ray is not None:
        on_ray(data)
    cache = cache if cache is not None else logit_cache(job)
    refs = put_splits(data)
    return Prepared(data=data, refs=refs, cache=cache, teachers=run_teachers(job, data, cache, refs))


def checked(logits: Logits, who: str, split: str) -> Logits:
    """Raise a named DataError when a teacher's logits hold NaN or inf."""
    parts = (logits.values, logits.rest_lse) if isinstance(logits, TopK) else (logits,)
    for m in range(len(parts[0])):
        if not all(np.isfinite(p[m]).all() for p in parts):
            raise DataError(
                f"{who} {m} logits contain NaN/inf on the {split} split; check that teacher's "
                f"checkpoint (a finite model is required)"
            )
    return logits


def text_f1(data: Dataset) -> Callable[[np.ndarray], float | None]:
    """Macro-F1 of (N_test, C) logits on the test split for a text dataset; None otherwise."""
    from raykd.metrics.classification import macro_f1

    if getattr(data, "text", None) is None:
        return lambda logits: None
    return lambda logits: macro_f1(logits.argmax(-1), data.test.y, data.num_classes)


def ensemble_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the plain logit average over teachers, logits (M, N, C)."""
    return accuracy(logits.mean(0), y)


def start_pool(configs: list[Any], data: Dataset, job: Job) -> Any:
    """The teacher actors for ``configs`` (a placement group of GPUs when there are GPUs)."""
    from raykd.teachers import TeacherPool

    return TeacherPool(configs, input_shape=data.input_shape, num_classes=data.num_classes,
                       use_gpu=resolve_gpu(job.spec.scaling.use_gpu),
                       gpu_fraction=job.spec.scaling.teacher_gpu_fraction)


def split_logits(pool: Any, data: Dataset, job: Job, cache: Any, refs: dict[str, Any],
                 who: str) -> dict[str, Logits]:
    """Each teacher's logits over train/val/test (cached), checked for NaN/inf."""
    out: dict[str, Logits] = {}
    stats: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        got = pool.split_logits(split, refs[f"x_{split}"], part.fingerprint,
                                cache=cache, dtype=job.spec.cache.dtype, topk=job.spec.cache.topk,
                                spans=data.spans is not None)
        out[split] = checked(got.logits, who, split)
        stats[split] = {"cache_hits": got.cache_hits, "teacher_forward_examples": got.forward_examples,
                        "seconds": got.seconds, "cache_keys": got.keys,
                        **entry_size(got.stored_bytes, len(got.keys), len(part))}
    job.result.setdefault("logit_cache", {})[who] = stats
    return out


def entry_size(stored: int, teachers: int, rows: int) -> dict[str, float]:
    """``bytes_per_window_per_teacher`` (per row: a window, an example) of a split's stored
    cache entries; span entries hold the valid positions only, in float16."""
    return {"bytes_per_window_per_teacher": stored / max(1, teachers * rows)}


def _teacher_cache_path(cache: Any, job: Job, index: int, fingerprint: str) -> Path | None:
    """Where a raykd-trained teacher is kept for reuse: keyed by everything that made it
    (a user module's source included)."""
    from raykd.models.user import model_identity

    if cache.directory is None:
        return None
    t = job.spec.teachers[index]
    ident = json.dumps({"model": t.model.model_dump(mode="json"), "seed": t.seed, "data": fingerprint,
                        "train": job.spec.teacher_train.model_dump(mode="json"),
                        "identity": model_identity(t.model.model_dump())}, sort_keys=True)
    return cache.directory / "teachers" / f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.safetensors"


def _own_checkpoint(job: Job, index: int) -> Path:
    return job.layout.teacher(index)


def _teacher_configs(job: Job, data: Dataset, cache: Any) -> list[Any]:
    """Actor configs; a teacher without a checkpoint takes this job's earlier one, or the cache's."""
    from raykd.teachers import TeacherConfig

    configs = []
    for i, t in enumerate(job.spec.teachers):
        checkpoint = checked_checkpoint(t.checkpoint)  # the spec's file, checked once opened
        if checkpoint is None and not t.fine_tune:
            checkpoint = given_as_is(job, i, data)
        if checkpoint is None:
            # this job's own file counts only when resuming the same job (same spec, same dir)
            own = _own_checkpoint(job, i) if job.attempt > 1 else None
            shared = _teacher_cache_path(cache, job, i, data.train.fingerprint)
            for found in (own, shared):
                if found is not None and found.is_file() and _intact(job, i, found):
                    checkpoint = str(found)
                    break
        configs.append(TeacherConfig(model=t.model.model_dump(), checkpoint=checkpoint, seed=t.seed,
                                     trained_path=str(_own_checkpoint(job, i)),
                                     fault=teacher_fault(job.spec.faults, i,
                                                         job.layout.fault_marker(f"teacher-{i}"))))
    return configs


def given_as_is(job: Job, index: int, data: Dataset) -> str:
    """A teacher used as given (``fine_tune: false``): its folder's model, its head's label
    names checked against the data's classes, saved as this job's checkpoint of it
    (``teachers/teacher-<i>-given.safetensors``), which the teacher stage then loads like
    any given checkpoint: no training."""
    from raykd.models import build_model, save_checkpoint

    t = job.spec.teachers[index]
    model = build_model(t.model.model_dump(), data.input_shape, data.num_classes)
    where = f"teachers[{index}] ({t.model.path})"
    head = "ForQuestionAnswering" if getattr(data, "spans", None) is not None else \
        "ForSequenceClassification"
    archs = [str(a) for a in (model.hf.config.architectures or [])]
    if not any(a.endswith(head) for a in archs):
        raise SpecError(f"{where}: fine_tune: false needs a folder with a trained *{head} head; "
                        f"its config.json names {archs or 'no architectures'} (a base model: its "
                        "head would be random); use fine_tune: true to train one here")
    check_head_labels(model, where, data)
    path = job.layout.teacher(index, given=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path, config=t.model.model_dump(), input_shape=data.input_shape,
                    num_classes=data.num_classes)
    job.say(f"teacher {index}: {t.model.path} used as given (fine_tune: false), not trained")
    return str(path)


def check_head_labels(model: Any, where: str, data: Dataset) -> None:
    """A fine-tuned text classifier's label names (its config's ``id2label``) must be the
    data's class names in the same order; generic names (``LABEL_0``...) are taken as the
    data's order.

    Raises:
        SpecError: naming both lists when they differ.
    """
    import re

    hf = getattr(model, "hf", None)
    labels = getattr(getattr(hf, "config", None), "id2label", None) or {}
    names = [str(labels[i]) for i in sorted(labels)]
    if data.class_names is None or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return
    if names != list(data.class_names):
        raise SpecError(f"{where}: its head's labels {names} are not the data's classes "
                        f"{list(data.class_names)} in order; give a classifier fine-tuned on "
                        "these classes, or fine_tune: true to train its head here")


def _intact(job: Job, index: int, path: Path) -> bool:
    """Whether a teacher checkpoint raykd trained earlier reads whole and passes its checksum.

    A damaged one is reported, deleted and not used: the teacher trains again.
    """
    from raykd.models.checkpoint import CheckpointDamaged, checkpoint_info

    try:
        checkpoint_info(path)
        return True
    except CheckpointDamaged as err:
        job.say(f"teacher {index}: {err}; it was deleted and the teacher trains again")
        path.unlink(missing_ok=True)
        return False
    except CheckpointError as err:  # unreadable now (permissions, storage): kept for other jobs
        job.say(f"teacher {index}: {err}; it is not used here and the teacher trains again")
        return False


def report_rejected(job: Job, cache: Any) -> None:
    """Say each damaged logit-cache entry this job found (deleted, computed again)."""
    rejected = getattr(cache, "rejected", [])
    for line in rejected:
        job.say(line)
    if rejected:
        job.result.setdefault("damaged_files", []).extend(rejected)
    rejected.clear()


def cached_logits(job: Job, data: Dataset, cache: Any, configs: list[Any]) -> dict[str, Logits] | None:
    """Every teacher's logits over train/val/test from the cache, without starting an actor.

    Only when every teacher has a checkpoint (given, or trained earlier) and all their
    entries are in the cache: the
    keys are those :meth:`~raykd.teachers.TeacherPool.split_logits` computes, from the
    weights hash of each checkpoint loaded here (its shape and classes checked as an
    actor would). None on any miss: the actors then start and fill the gaps.
    """
    from raykd.losses.topk import stack
    from raykd.models import weights_hash
    from raykd.models.user import model_identity
    from raykd.teachers.cache import SPAN_DTYPE, cache_key, dense_spans
    from raykd.teachers.pool import stored_bytes

    spec = job.spec
    dtype = SPAN_DTYPE if data.spans is not None else spec.cache.dtype
    if cache.directory is None or any(c.checkpoint is None for c in configs):
        return None
    out: dict[str, Logits] = {}
    stats: dict[str, Any] = {}
    with job.stage("teacher_logits"):
        hashes = [weights_hash(load_checkpoint(c.checkpoint, config=c.model,
                                               input_shape=data.input_shape,
                                               num_classes=data.num_classes)) for c in configs]
        models = [model_identity(c.model) for c in configs]
        for split in ("train", "val", "test"):
            keys = [cache_key(weights=h, model=model, fingerprint=getattr(data, split).fingerprint,
                              split=split, dtype=dtype, topk=spec.cache.topk)
                    for h, model in zip(hashes, models, strict=True)]
            found: list[Any] = [cache.get(k) for k in keys]
            if any(f is None for f in found):
                return None
            size = entry_size(sum(stored_bytes(f) for f in found), len(keys),
                              len(getattr(data, split)))
            if data.spans is not None:
                found = [dense_spans(f) for f in found]
            out[split] = checked(stack(found), "teacher", split)
            stats[split] = {"cache_hits": len(keys), "teacher_forward_examples": 0,
                            "seconds": 0.0, "cache_keys": keys, **size}
    job.result.setdefault("logit_cache", {})["teacher"] = stats
    return out


def run_teachers(job: Job, data: Dataset, cache: Any, refs: dict[str, Any]) -> TeacherSet:
    """Start, train (when needed) and query the teachers; record their accuracies.

    Every logit already cached (:func:`cached_logits`): no teacher actor starts, except
    what serves online logits with augmentation. Otherwise the actors are released on
    every path out (on CPUs one ensemble actor replaces them when they serve online).
    """
    configs = _teacher_configs(job, data, cache)
    hit = cached_logits(job, data, cache, configs)
    report_rejected(job, cache)
    if hit is not None:
        _record_teachers(job, data, hit, configs, {})
        job.say("teachers: every split's logits came from the cache")
        return TeacherSet(logits=hit, checkpoints=[str(c.checkpoint) for c in configs],
                          pool=_online_server(job, data, configs))
    with job.stage("teacher_start"):
        pool = start_pool(configs, data, job)
    try:
        fitted = _train_missing(job, data, cache, refs, pool, configs)
        with job.stage("teacher_logits"):
            logits = split_logits(pool, data, job, cache, refs, "teacher")
        report_rejected(job, cache)
        _record_teachers(job, data, logits, configs, fitted)
        job.result["teacher_placement"] = pool.infos()
    except BaseException:
        pool.shutdown()
        raise
    if not job.spec.data.augment:
        pool.shutdown()  # frozen logits are cached: free the teachers' devices for the students
        pool = None
    elif not resolve_gpu(job.spec.scaling.use_gpu):
        pool.shutdown()  # on CPUs one actor serves every teacher: one call per step
        pool = online_ensemble(job, data, configs)
    return TeacherSet(logits=logits, checkpoints=[str(c.checkpoint) for c in configs], pool=pool)


def _online_server(job: Job, data: Dataset, configs: list[Any]) -> Any:
    """What serves online logits when every split came from the cache: None without augmentation.

    On CPUs the one-actor ensemble; with GPUs the teacher pool (each on its own GPU).
    """
    if not job.spec.data.augment:
        job.result["teacher_placement"] = []
        return None
    if not resolve_gpu(job.spec.scaling.use_gpu):
        job.result["teacher_placement"] = []
        return online_ensemble(job, data, configs)
    with job.stage("teacher_start"):
        pool = start_pool(configs, data, job)
    try:
        job.result["teacher_placement"] = pool.infos()
    except BaseException:
        pool.shutdown()
        raise
    return pool


def online_ensemble(job: Job, data: Dataset, configs: list[Any]) -> Any:
    """The CPU server of online logits: every teacher in one actor (see ``raykd.teachers.ensemble``)."""
    from raykd.teachers.ensemble import OnlineEnsemble

    with job.stage("teacher_start"):
        sc = job.spec.scaling
        return OnlineEnsemble([{"model": c.model, "checkpoint": c.checkpoint} for c in configs],
                              input_shape=data.input_shape, num_classes=data.num_classes,
                              student_threads=sc.num_workers * max(1, int(sc.cpus_per_worker)),
                              replicas=sc.teacher_replicas)


def _train_missing(job: Job, data: Dataset, cache: Any, refs: dict[str, Any], pool: Any,
                   configs: list[Any]) -> dict[int, Any]:
    """Train the teachers without a checkpoint; publish each to the shared cache."""
    out_paths = [str(_own_checkpoint(job, i)) for i in range(len(configs))]
    with job.stage("teacher_train"):
        fitted = pool.fit_missing(refs["x_train"], refs["y_train"], out_paths=out_paths,
                                  **job.spec.teacher_train.model_dump())
    for i, fit in sorted(fitted.items()):  # each epoch's loss is in the actor's output (ray.log)
        if "final_loss" in fit and not fit.get("reused"):
            job.say(f"teacher {i}: trained in {fit['seconds']:.1f} s, "
                    f"final loss {fit['final_loss']:.4f}")
        shared = _teacher_cache_path(cache, job, i, data.train.fingerprint)
        if shared is not None:
            publish_file(out_paths[i], shared)  # other jobs test is_file(): never a partial file
    return fitted


def _earlier_fit(job: Job, index: int, checkpoint: str | None) -> dict[str, Any] | None:
    """The fit an earlier attempt of this job made of teacher ``index``, when this attempt
    loads that teacher's own checkpoint: its result (``seconds``, ``final_loss``), as the
    checkpoint's metadata keeps it (:meth:`raykd.teachers.Teacher.fit`); None otherwise (a
    given checkpoint, or one another job trained and published to the cache)."""
    from raykd.teachers.teacher import read_fit_record

    if checkpoint is None or Path(checkpoint) != _own_checkpoint(job, index):
        return None
    record = read_fit_record(checkpoint)
    return dict(record["result"]) if record is not None else None


def model_scores(data: Dataset, val: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """A model's (or the ensemble's mean) scores from its val and test logits:
    ``val_accuracy``, ``test_accuracy``, ``test_macro_f1`` (text classification) and ``span``
    (span data: SQuAD v2.0 EM/F1 on test at the no-answer threshold chosen on val,
    :func:`raykd.data.span_data.span_row`; the accuracies are then the share of windows whose
    start and end arg-max over the valid positions are both right)."""
    if data.spans is None:
        return {"val_accuracy": accuracy(val, data.val.y), "test_accuracy": accuracy(test, data.test.y),
                "test_macro_f1": text_f1(data)(test)}
    from raykd.data.span_data import span_row, window_accuracy

    return {"val_accuracy": window_accuracy(val, data.val.x, data.val.y),
            "test_accuracy": window_accuracy(test, data.test.x, data.test.y),
            "test_macro_f1": None, "span": span_row(val, test, data.spans)}


def span_event_fields(scores: dict[str, Any]) -> dict[str, float | None]:
    """``test_f1``/``test_exact`` of an event from :func:`model_scores` (None without spans)."""
    span = scores.get("span")
    if span is None:
        return {}
    return {"test_f1": span["test"]["f1"], "test_exact": span["test"]["exact"]}


def _record_teachers(job: Job, data: Dataset, logits: dict[str, Logits], configs: list[Any],
                     fitted: dict[int, Any]) -> None:
    """Teacher and ensemble scores into the result, one event per teacher."""
    val, test = dense(logits["val"]), dense(logits["test"])
    rows = []
    for i, c in enumerate(configs):
        fit = fitted.get(i) or _earlier_fit(job, i, c.checkpoint)
        scores = model_scores(data, val[i], test[i])
        row = {"index": i, "model": job.spec.teachers[i].model.model_dump(mode="json"),
               "checkpoint": c.checkpoint, "trained_by_raykd": fit is not None,
               "train_seconds": float((fit or {}).get("seconds", 0.0)), **scores}
        rows.append(row)
        job.emit(TeacherReady(index=i, trained=i in fitted, checkpoint=str(c.checkpoint),
                              val_accuracy=row["val_accuracy"], test_accuracy=row["test_accuracy"],
                              test_macro_f1=row["test_macro_f1"], **span_event_fields(scores)))
        job.say(f"teacher {i}: test accuracy {row['test_accuracy']:.4f}" + span_said(scores))
    job.result["teachers"] = rows
    ensemble = model_scores(data, val.mean(0), test.mean(0))
    job.result["ensemble"] = ensemble
    job.say(f"ensemble of {len(configs)}: test accuracy {ensemble['test_accuracy']:.4f}"
            + span_said(ensemble))


def span_said(scores: dict[str, Any]) -> str:
    """``, test F1 .. / EM ..`` for a span model's line in the log ('' otherwise)."""
    span = scores.get("span")
    if span is None:
        return ""
    return f", test F1 {span['test']['f1']:.2f} / EM {span['test']['exact']:.2f} (SQuAD v2.0)"
