"""The only place that knows which Keras backend runs: devices, versions and backend-specific set-up."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    """Silence writes to file descriptor 2 (C++ libraries), leaving Python's own exceptions untouched."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_start() -> None:
    """Start the backend without TensorFlow's C++ start-up lines (oneDNN, CUDA probing) on the terminal.

    Set HARNESS_VERBOSE=1 to see them, e.g. when a GPU is not found.
    """
    if os.environ.get("HARNESS_VERBOSE"):
        return
    with _stderr_fd_silenced():
        import keras  # imports the backend

        if keras.config.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # device probing prints too: do it now, silenced
            tf.get_logger().setLevel("ERROR")  # e.g. retracing notes for the last, smaller batch


def backend_name() -> str:
    import keras

    return keras.config.backend()


def devices() -> list[str]:
    """Accelerators the backend can use, e.g. ['GPU:0']; empty on a CPU-only machine."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        return [f"GPU:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]
    if name == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if name == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def backend_version() -> str:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend_name())
    if module is None:
        return "unknown"
    return str(getattr(__import__(module), "__version__", "unknown"))


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """What a run ran on: stored with every run record so results can be compared honestly."""
    import keras

    from harness import __version__

    return {
        "harness": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "keras": keras.__version__,
        "backend": backend_name(),
        "backend_version": backend_version(),
        "numpy": np.__version__,
        "devices": devices() or ["CPU"],
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
    }
