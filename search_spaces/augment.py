"""`augment`: training augmentation (flips and rotations, colour jitter, crops) over seed model 2, unchanged."""

from __future__ import annotations

from harness.config import AugmentConfig
from harness.registry import ARCHITECTURES, SEARCH_SPACES
from harness.tuning.space import Sample, Suggest

BASELINE = "seed_model2"  # its own recipe, Adam(1e-4), stays fixed: only the augmentation varies


@SEARCH_SPACES.register("augment", widens=BASELINE)
def augment(s: Suggest) -> Sample:
    """Dihedral transforms, HED stain, saturation, brightness, contrast and hue jitter, and crops on seed model 2."""
    config = AugmentConfig(
        dihedral=bool(s.suggest_categorical("dihedral", (False, True))),
        brightness=round(s.suggest_float("brightness", 0.0, 0.2, step=0.05), 2),
        contrast=round(s.suggest_float("contrast", 0.0, 0.2, step=0.05), 2),
        hue=round(s.suggest_float("hue", 0.0, 0.05, step=0.01), 2),
        crop={"none": None, "random": "random", "centre": "centre"}[
            s.suggest_categorical("crop", ("none", "random", "centre"))
        ],
        crop_size=s.suggest_int("crop_size", 64, 88, step=8),
        # Stain strength: one sigma for the scale and the shift of each stain, as Tellez et al. 2019 tune it.
        hed=round(s.suggest_float("hed", 0.0, 0.2, step=0.05), 2),
        saturation=round(s.suggest_float("saturation", 0.0, 0.3, step=0.1), 2),
    )
    training = ARCHITECTURES.get(BASELINE).training
    assert training is not None  # a seed model always registers the notebook's recipe
    return Sample(BASELINE, {}, training.optimizer, augment=config)
