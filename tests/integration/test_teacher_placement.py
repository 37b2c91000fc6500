"""Teacher placement: one GPU per teacher, tested with Ray's fake GPU resources.

On a machine with real GPUs the same pool puts each teacher on its own device; the `gpu`
marker test checks that for real (skipped here). The student stage's up-front resource
check counts every teacher pool that holds GPUs while students train (issue 8 item 11).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from raykd.core.spec import parse_spec
from raykd.engine.context import Job
from raykd.engine.student_workers import check_student_resources
from raykd.teachers import ResourceError, TeacherConfig, TeacherPool
from tests.helpers.specs import digits_spec

pytestmark = pytest.mark.ray
MLP = {"name": "mlp", "hidden": [8]}


@pytest.fixture(scope="module")
def fake_gpus() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=3, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def pool(n: int, fraction: float = 1.0) -> TeacherPool:
    return TeacherPool([TeacherConfig(model=MLP, seed=i) for i in range(n)], input_shape=(4,),
                       num_classes=3, use_gpu=True, gpu_fraction=fraction, ready_timeout_s=180)


@pytest.mark.slow
def test_each_teacher_gets_its_own_gpu(fake_gpus: None) -> None:
    p = pool(3)
    try:
        infos = p.infos()
        ids = [tuple(i["gpu_ids"]) for i in infos]
        assert all(len(g) == 1 for g in ids) and len(set(ids)) == 3
        assert len({i["cuda_visible_devices"] for i in infos}) == 3
        assert len({i["pid"] for i in infos}) == 3
    finally:
        p.shutdown()


@pytest.mark.slow
def test_fractions_share_gpus_when_the_spec_allows(fake_gpus: None) -> None:
    """Fraction 0.5: six teachers fit on three GPUs, two per GPU, each on exactly one GPU."""
    p = pool(6, fraction=0.5)
    try:
        infos = p.infos()
        assert len(infos) == 6 and len({i["pid"] for i in infos}) == 6
        assert all(len(i["gpu_ids"]) == 1 for i in infos)
        per_gpu = Counter(i["gpu_ids"][0] for i in infos)
        assert per_gpu == {"0": 2, "1": 2, "2": 2}
        assert all(i["cuda_visible_devices"] == i["gpu_ids"][0] for i in infos)
    finally:
        p.shutdown()


@pytest.mark.slow
def test_too_many_teachers_for_the_gpus_is_a_clear_error(fake_gpus: None) -> None:
    with pytest.raises(ResourceError, match="4 teachers .* need 4 GPUs, the cluster has 3"):
        pool(4)


N_TRAIN = 1000


def student_job(tmp_path: Path, *, generations: int = 2, augment: bool = True,
                fraction: float = 1.0) -> Job:
    """2 teachers and 1 GPU student worker; born-again with ``generations`` > 1."""
    spec = parse_spec(digits_spec(
        str(tmp_path), data={"dataset": "digits", "augment": augment},
        teachers=[{"model": MLP, "seed": s} for s in (1, 2)],
        methods=[{"method": "kd", "generations": generations}],
        scaling={"num_workers": 1, "use_gpu": True, "teacher_gpu_fraction": fraction}))
    return Job(spec=spec, job_dir=tmp_path)


@pytest.mark.slow
def test_born_again_with_augmentation_counts_its_teacher_pool(fake_gpus: None,
                                                              tmp_path: Path) -> None:
    """3 GPUs: 2 online teachers + generation 1 serving generation 2 + 1 student need 4."""
    message = ("1 GPU student workers + 3 GPUs of online teachers (augmentation on, plus a "
               "born-again generation) need 4 GPUs, the cluster has 3; lower "
               "scaling.num_workers or scaling.teacher_gpu_fraction")
    with pytest.raises(ResourceError, match=re.escape(message)):
        check_student_resources(student_job(tmp_path), n_train=N_TRAIN)
    check_student_resources(student_job(tmp_path, generations=1), n_train=N_TRAIN)  # 2 + 1
    check_student_resources(student_job(tmp_path, augment=False), n_train=N_TRAIN)  # pools freed: 1
    check_student_resources(student_job(tmp_path, fraction=0.5), n_train=N_TRAIN)  # 1.5 + 1


@pytest.mark.slow
def test_teachers_in_process_asked_on_a_gpu_cluster_fail_before_any_work(fake_gpus: None,
                                                                          tmp_path: Path) -> None:
    """use_gpu auto finds the (fake) GPUs: in_process cannot be honoured, and says so; auto
    and actors serve from teacher actors on their own GPUs."""
    from raykd.engine.cluster import online_in_process

    def spec(mode: str) -> object:
        return parse_spec(digits_spec(str(tmp_path), data={"dataset": "digits", "augment": True},
                                      scaling={"use_gpu": "auto", "online_teachers": mode}))

    with pytest.raises(ResourceError, match=r"online_teachers='in_process' runs the teachers on "
                                            r"the student workers' CPU threads, but the students "
                                            r"use the cluster's GPUs"):
        online_in_process(spec("in_process"))
    assert not online_in_process(spec("auto")) and not online_in_process(spec("actors"))


@pytest.mark.slow
def test_what_the_check_accepts_leaves_gpus_for_the_students(fake_gpus: None,
                                                             tmp_path: Path) -> None:
    """The pools a job holds while generation 2 trains (its teachers, generation 1) leave a GPU."""
    job = student_job(tmp_path, fraction=0.5)
    check_student_resources(job, n_train=N_TRAIN)
    teachers, born_again = pool(2, fraction=0.5), pool(1, fraction=0.5)
    try:
        deadline = time.monotonic() + 20
        while ray.available_resources().get("GPU", 0) > 1.5 and time.monotonic() < deadline:
            time.sleep(0.1)  # the reservation is reported asynchronously
        assert ray.available_resources().get("GPU", 0) == pytest.approx(1.5)  # 3 - (2 + 1) x 0.5
        assert ray.available_resources()["GPU"] >= job.spec.scaling.num_workers
    finally:
        teachers.shutdown()
        born_again.shutdown()


@pytest.mark.gpu
def test_real_gpu_teacher_runs_on_cuda() -> None:  # pragma: no cover - needs a GPU
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    ray.shutdown()
    ray.init(logging_level="WARNING")
    try:
        p = TeacherPool([TeacherConfig(model=MLP)], input_shape=(4,), num_classes=3, use_gpu=True)
        assert p.infos()[0]["device"] == "cuda"
        p.shutdown()
    finally:
        ray.shutdown()
