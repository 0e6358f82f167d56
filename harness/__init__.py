"""harness: an AutoML and benchmark harness for Kaggle's Histopathologic Cancer Detection.

The Python API, the layer the `harness` command shares (see harness.api)::

    import harness
    harness.run("baselines", data="kaggle", sample=2000, epochs=1)
    harness.search(trials=10, data="kaggle", sample=2000, epochs=1)
    harness.leaderboard(data="kaggle", by="val_auc")  # a pandas DataFrame
    model = harness.load_model("results/runs/<run_id>/model.keras")  # plain keras.saving.load_model works too
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

# Installed, `harness.architectures` and `harness.search_spaces` are real subpackages (pyproject's package-dir).
# Imported straight from a source checkout (the repository on sys.path, e.g. `python -m harness` in the clone), they
# are the top-level plug-in folders beside this package: let the package's path reach them there.
_CHECKOUT = Path(__file__).resolve().parent.parent
if not Path(__file__).with_name("architectures").is_dir() and (_CHECKOUT / "architectures" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))

__version__ = "0.1.0"

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

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
