"""The only place that knows which Keras backend runs: devices, versions and backend-specific set-up."""

from __future__ import annotations

import contextlib
import importlib.util
import json
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


# Each Keras backend and the package that provides it (installed with `pip install "harness[<backend>]"`).
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def pick_backend(requested: str | None, configured: str | None, installed: list[str]) -> str | None:
    """The backend to ask Keras for, or None to leave Keras' own choice; HarnessError when none can run.

    `requested` is KERAS_BACKEND, `configured` keras.json's backend (Keras' default is TensorFlow). An explicit
    request is obeyed or refused; otherwise an installed backend stands in for a configured one that is missing.
    """
    from harness.errors import HarnessError

    if requested:
        if requested in BACKENDS and requested not in installed:
            raise HarnessError(f"KERAS_BACKEND={requested}, but {requested} is not installed: "
                               f'pip install "harness[{requested}]", or set KERAS_BACKEND to one of: '
                               f"{', '.join(installed) or 'none is installed'}")  # fmt: skip
        return None
    configured = configured or "tensorflow"
    if configured in installed or configured not in BACKENDS:
        return None
    if not installed:
        raise HarnessError('no Keras backend is installed: pip install "harness[tensorflow]" (or [jax], [torch])')
    return installed[0]


def choose_backend() -> str | None:
    """Before Keras starts: when its backend is not installed but another is, use that one (sets KERAS_BACKEND)."""
    if "keras" in sys.modules:
        return None  # Keras has chosen already
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        configured = json.loads(Path(home, "keras.json").read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        configured = None
    installed = [name for name, module in BACKENDS.items() if importlib.util.find_spec(module) is not None]
    chosen = pick_backend(os.environ.get("KERAS_BACKEND"), configured, installed)
    if chosen:
        os.environ["KERAS_BACKEND"] = chosen
    return chosen


def is_non_finite_output_error(exc: BaseException) -> bool:
    """Whether `exc` is the backend refusing a NaN probability, which TensorFlow and JAX report as a NaN loss.

    PyTorch's binary_cross_entropy raises 'all elements of input should be between 0 and 1' instead.
    """
    return backend_name() == "torch" and isinstance(exc, RuntimeError) and "should be between 0 and 1" in str(exc)


def quiet_start() -> None:
    """Start the backend without TensorFlow's C++ start-up lines (oneDNN, CUDA probing) on the terminal.

    Set HARNESS_VERBOSE=1 to see them, e.g. when a GPU is not found.
    """
    choose_backend()
    allow_fused_elementwise()
    if os.environ.get("HARNESS_VERBOSE"):
        return
    with _stderr_fd_silenced():
        import keras  # imports the backend

        if keras.config.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # device probing prints too: do it now, silenced
            tf.get_logger().setLevel("ERROR")  # e.g. retracing notes for the last, smaller batch


# TensorFlow reads TF_XLA_FLAGS once, at its first use of XLA. With these, auto-clustering XLA-compiles only the
# "fusible" (element-wise) ops: oneDNN keeps the convolutions, matrix products and the activations it fuses into
# them, and XLA fuses what it cannot (PReLU: five passes over memory become one).
FUSIBLE_XLA_FLAGS = ("--tf_xla_cpu_global_jit", "--tf_xla_ops_to_cluster=FUSIBLE")


def allow_fused_elementwise() -> None:
    """Before TensorFlow starts: add FUSIBLE_XLA_FLAGS to TF_XLA_FLAGS (so that `fused_elementwise` can work)."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tensorflow" in sys.modules or "--tf_xla_ops_to_cluster" in flags:
        return  # too late to be read for sure, or the user's own choice
    os.environ["TF_XLA_FLAGS"] = " ".join([flags, *FUSIBLE_XLA_FLAGS]).strip()


@contextlib.contextmanager
def fused_elementwise() -> Iterator[None]:
    """TensorFlow: the graphs run inside fuse their element-wise ops with XLA, around oneDNN's kernels; the same
    predictions, faster (seed_model3's predict: about 1.15x, from 76% to 93% of the float32 matmul ceiling).
    A no-op on other backends, on a GPU (not measured there), and where TensorFlow started without
    FUSIBLE_XLA_FLAGS (it would then cluster the convolutions too, and XLA's are slower than oneDNN's)."""
    if backend_name() != "tensorflow" or FUSIBLE_XLA_FLAGS[1] not in os.environ.get("TF_XLA_FLAGS", "").split():
        yield
        return
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        yield
        return

    previous = tf.config.optimizer.get_jit()
    tf.config.optimizer.set_jit("autoclustering")
    try:
        yield
    finally:
        tf.config.optimizer.set_jit(previous or False)


def set_threads(threads: int) -> None:
    """Use `threads` compute threads (within and across ops); call before the backend runs anything."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            from harness.errors import HarnessError

            raise HarnessError("--threads must be set before TensorFlow starts; it had already started") from None
    elif name == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    else:
        from harness.errors import HarnessError

        raise HarnessError(f"--threads is not supported on the {name} backend; limit the process instead (taskset)")


def forget_traced_gradients() -> int:
    """Drop the gradient functions TensorFlow registers globally each time a train step is traced; returns how many.

    Keras' TensorFlow optimizer all-reduces gradients through tf.distribute, whose graph-mode custom_gradient
    registers a 'CustomGradient-<uid>' entry in a process-wide registry. Each entry keeps its whole FuncGraph alive,
    so clear_session() alone leaves ~10 MB per trial (more for deep models). Call only when no model is in use.
    """
    if backend_name() != "tensorflow":
        return 0
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):
        return 0
    stale = [name for name in registry if name.startswith("CustomGradient-")]
    for name in stale:
        del registry[name]
    return len(stale)


def backend_name() -> str:
    import keras

    return keras.config.backend()


def devices() -> list[str]:
    """Accelerators the backend can use, with their model names, e.g. ['cuda:0 NVIDIA H100']; empty on a CPU."""
    name = backend_name()
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = [tf.config.experimental.get_device_details(g).get("device_name", "") for g in gpus]
        return [f"GPU:{i} {d}".strip() for i, d in enumerate(details)]
    if name == "jax":
        import jax

        return [f"{d} {d.device_kind}" for d in jax.devices() if d.platform != "cpu"]
    if name == "torch":
        import torch

        return [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return []


def backend_version() -> str:
    module = BACKENDS.get(backend_name())
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

    from harness.version import __version__

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
