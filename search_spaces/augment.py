"""`augment`: training augmentation (flips and rotations, colour jitter, crops) over seed model 2, unchanged."""

from __future__ import annotations

from harness.config import AugmentConfig, OptimizerConfig
from harness.registry import ARCHITECTURES, SEARCH_SPACES
from harness.search.space import Sample, Suggest

BASELINE = "seed_model2"  # its own recipe, Adam(1e-4), stays fixed: only the augmentation varies


@SEARCH_SPACES.register("augment", widens=BASELINE, points=(BASELINE,))
def augment(s: Suggest) -> Sample:
    """Dihedral transforms, brightness, contrast and hue jitter, and crops on seed model 2 and its optimiser."""
    config = AugmentConfig(
        dihedral=bool(s.suggest_categorical("dihedral", (False, True))),
        brightness=round(s.suggest_float("brightness", 0.0, 0.2, step=0.05), 2),
        contrast=round(s.suggest_float("contrast", 0.0, 0.2, step=0.05), 2),
        hue=round(s.suggest_float("hue", 0.0, 0.05, step=0.01), 2),
        crop={"none": None, "random": "random", "centre": "centre"}[
            s.suggest_categorical("crop", ("none", "random", "centre"))
        ],
        crop_size=s.suggest_int("crop_size", 64, 88, step=8),
    )
    optimizer: OptimizerConfig = ARCHITECTURES.get(BASELINE).meta["training"].optimizer
    return Sample(BASELINE, {}, optimizer, augment=config)
