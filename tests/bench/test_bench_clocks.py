"""The bench's whole-process clock: a child's peak memory is its own, not the image of the process that ran it."""

from __future__ import annotations

import resource
import sys

import pytest

from harness.bench.clocks import whole_process

MB = 10**6


@pytest.mark.backend_free
def test_whole_process_peak_rss_is_the_commands_own_not_its_large_parents():
    ballast = b"\x01" * (500 * MB)  # touched pages: this process is now large, as pytest or a bench with Keras is
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > 500 * MB
    small = whole_process([sys.executable, "-c", "pass"], "a bare interpreter")
    large = whole_process([sys.executable, "-c", "x = b'1' * 300_000_000"], "an interpreter holding 300 MB")
    del ballast
    assert small.peak_rss < 100 * MB  # /usr/bin/time says about 10 MB; Linux's rusage alone says over 500 MB
    assert 300 * MB < large.peak_rss < 400 * MB  # the command's own growth is still measured
    assert small.seconds > 0
