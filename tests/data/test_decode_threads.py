"""The default number of decode threads follows the CPUs this process may use, capped where more stop paying off."""

from __future__ import annotations

import os

import pytest

from harness.data import decode_pool


@pytest.mark.backend_free
@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (4, 4), (16, 4), (64, 4)])
def test_default_decode_threads_follow_the_affinity_up_to_the_cap(cpus, expected, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert decode_pool.default_workers() == expected
