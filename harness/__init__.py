"""harness: an AutoML and benchmark harness for Kaggle's Histopathologic Cancer Detection.

The Python API, the layer the `harness` command shares (see harness.api)::

    import harness
    harness.run("baselines", data="kaggle", sample=2000, epochs=1)
    harness.search(trials=10, data="kaggle", sample=2000, epochs=1)
    harness.leaderboard(data="kaggle", by="val_auc")  # a pandas DataFrame
    model = harness.load_model("results/runs/<run_id>/model.keras")  # plain keras.saving.load_model works too
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.version import __version__  # noqa: F401 - harness.__version__

# TensorFlow's C++ logging reads this when it loads: a script that imports any harness module is as quiet as the
# command (HARNESS_VERBOSE=1, or the variable set beforehand, shows the lines).
if not os.environ.get("HARNESS_VERBOSE"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _CheckoutPlugins(importlib.abc.MetaPathFinder):
    """Installed, `harness.architectures` and `harness.search_spaces` are real subpackages (pyproject's
    package-dir). Imported straight from a source checkout (the clone on sys.path, e.g. `python -m harness` in it,
    with no install or an editable one whose hook is absent), they are the top-level plug-in folders beside this
    package: this finder, last on sys.meta_path, maps those two names there and nothing else."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


_CHECKOUT = Path(__file__).resolve().parent.parent
_FROM_SOURCE = not Path(__file__).with_name("architectures").is_dir()
_REGISTERED = any(isinstance(finder, _CheckoutPlugins) for finder in sys.meta_path)
if _FROM_SOURCE and not _REGISTERED and (_CHECKOUT / "architectures" / "__init__.py").is_file():
    sys.meta_path.append(
        _CheckoutPlugins({f"harness.{name}": _CHECKOUT / name for name in ("architectures", "search_spaces")})
    )

# Imported on first use: `import harness` stays cheap (no Keras, no backend) until a function is called.
__all__ = [
    "ensemble",
    "export",
    "leaderboard",
    "load_model",
    "plan",
    "predict",
    "rank_runs",
    "report",
    "run",
    "scale",
    "search",
    "workspace",
]

if TYPE_CHECKING:
    from harness.api import (
        ensemble,
        export,
        leaderboard,
        load_model,
        plan,
        predict,
        rank_runs,
        report,
        run,
        scale,
        search,
        workspace,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from harness import api
        from harness.backend import quiet_start

        quiet_start()  # as the command does: no TensorFlow start-up chatter (cuInit, oneDNN) in a plain script
        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
