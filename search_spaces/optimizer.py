"""`optimizer`: the optimiser and its learning rate over seed model 3's fixed architecture."""

from __future__ import annotations

from harness.registry import SEARCH_SPACES
from harness.tuning.space import Sample, Suggest, suggest_optimizer

BASELINE = "seed_model3"  # the notebook's best model; its own RMSprop(1e-3) is a point of this space


@SEARCH_SPACES.register("optimizer", widens=BASELINE)
def optimizer(s: Suggest) -> Sample:
    """Adam, AdamW, RMSprop or SGD with momentum, log-uniform learning rate, on seed model 3 unchanged."""
    return Sample(BASELINE, {}, suggest_optimizer(s))
