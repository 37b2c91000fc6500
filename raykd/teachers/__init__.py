"""Frozen teachers: Ray actors that serve logits, and the per-teacher logit cache."""

from raykd.teachers.cache import LogitCache, cache_key
from raykd.teachers.pool import ResourceError, SplitLogits, TeacherConfig, TeacherPool
from raykd.teachers.teacher import Teacher

__all__ = ["LogitCache", "ResourceError", "SplitLogits", "Teacher", "TeacherConfig", "TeacherPool", "cache_key"]
