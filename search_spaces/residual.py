"""`residual`: blocks, width, squeeze-and-excitation, dropout and Adam's learning rate over the `resnet` family."""

from __future__ import annotations

from harness.architectures.resnet import BLOCKS
from harness.config import OptimizerConfig
from harness.cost import architecture_cost
from harness.registry import SEARCH_SPACES
from harness.tuning.space import InvalidConfiguration, Sample, Suggest

STAGES = (3, 4)
BLOCKS_PER_STAGE = (1, 3)
BASE_WIDTH = (16, 48, 8)  # low, high, step: the first stage's width; each later stage doubles it
DROPOUT = (0.0, 0.5, 0.1)
LEARNING_RATE = (1e-4, 3e-3)  # Adam's usual range on a batch-normalised net
# Bottleneck blocks at 48 wide end in 1,536 channels: above this a trial costs far more than it can teach here.
MAX_PARAMETERS = 8_000_000


@SEARCH_SPACES.register("residual", widens="resnet")
def residual(s: Suggest) -> Sample:
    """Basic or bottleneck blocks, 3 or 4 stages of 1 to 3 blocks, width 16 to 48, SE or not, dropout, Adam's rate."""
    block = s.suggest_categorical("block", BLOCKS)
    stages = s.suggest_int("stages", *STAGES)
    per_stage = s.suggest_int("blocks_per_stage", *BLOCKS_PER_STAGE)
    base = s.suggest_int("base_width", BASE_WIDTH[0], BASE_WIDTH[1], step=BASE_WIDTH[2])
    se = s.suggest_categorical("se", (False, True))
    dropout = s.suggest_float("dropout", DROPOUT[0], DROPOUT[1], step=DROPOUT[2])
    learning_rate = s.suggest_float("learning_rate", *LEARNING_RATE, log=True)
    kwargs = {
        "block": block,
        "blocks": [per_stage] * stages,
        "base_width": base,
        "se": bool(se),
        "dropout": round(dropout, 2),
    }
    cost = architecture_cost("resnet", **kwargs)
    if cost.parameters > MAX_PARAMETERS:
        raise InvalidConfiguration(
            f"{cost.parameters:,} parameters exceed the residual space's cap of {MAX_PARAMETERS:,} "
            f"({stages} stages of {per_stage} {block} blocks from width {base})"
        )
    derived = {"depth": cost.depth, "parameters": cost.parameters, "gmacs": round(cost.gmacs, 4)}
    return Sample("resnet", kwargs, OptimizerConfig("adam", float(learning_rate)), derived=derived)
