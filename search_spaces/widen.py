"""`widen`: deeper, wider, differently activated and optimised members of the seed's CNN family."""

from __future__ import annotations

from harness.architectures.cnn import ACTIVATIONS, PADDINGS, feature_map_size
from harness.cost import architecture_cost
from harness.data import IMAGE_SHAPE
from harness.registry import SEARCH_SPACES
from harness.tuning.space import InvalidConfiguration, Sample, Suggest, suggest_optimizer

BLOCKS = (2, 6)
CONVS_PER_BLOCK = (1, 5)
BASE_WIDTH = (16, 128)
GROWTH = (1.0, 2.0, 0.25)  # low, high, step: each block's width is the previous one's times this
MAX_WIDTH = 512  # widths stop growing here, so 6 doubling blocks from 128 do not reach 4096 filters
# Above this a model (weights, gradients and Adam's two slots: ~1 GiB of float32) is not worth a trial here.
MAX_PARAMETERS = 64_000_000
DENSE_HEADS = {
    "none": (),
    "128": (128,),
    "256-64": (256, 64),
    "512-256-64": (512, 256, 64),  # the seed's head
    "1024-512-256-64": (1024, 512, 256, 64),
}
DROPOUT = (0.0, 0.5, 0.05)

# The seed models as points of this space (seed_model1 has one block, below the range of 2 to 6).
SEED_POINTS = {
    "seed_model2": {
        "blocks": 4, "convs_per_block": 2, "base_width": 32, "growth": 2.0, "activation": "relu",
        "batch_norm": True, "dense": "512-256-64", "dropout": 0.25, "final_dropout": False,
        "optimizer": "adam", "learning_rate": 1e-4, "padding": "valid",
    },
    "seed_model3": {
        "blocks": 3, "convs_per_block": 5, "base_width": 32, "growth": 2.0, "activation": "prelu",
        "batch_norm": True, "dense": "512-256-64", "dropout": 0.25, "final_dropout": True,
        "optimizer": "rmsprop", "learning_rate": 1e-3, "padding": "valid",
    },
}  # fmt: skip


def max_convs_per_block(blocks: int, padding: str = "valid", input_size: int = IMAGE_SHAPE[0]) -> int:
    """The most convs per block that keep the last feature map at least 1x1 (0: no count fits)."""
    low, high = CONVS_PER_BLOCK
    return max((c for c in range(low, high + 1) if feature_map_size(input_size, [c] * blocks, padding)), default=0)


@SEARCH_SPACES.register("widen", widens="cnn")
def widen(s: Suggest) -> Sample:
    """Blocks, convs, widths, activation, batch norm, head, dropout and optimiser around seed models 2 and 3."""
    blocks = s.suggest_int("blocks", *BLOCKS)
    convs = s.suggest_int("convs_per_block", *CONVS_PER_BLOCK)
    base = s.suggest_int("base_width", *BASE_WIDTH, log=True)
    growth = s.suggest_float("growth", GROWTH[0], GROWTH[1], step=GROWTH[2])
    activation = s.suggest_categorical("activation", ACTIVATIONS)
    batch_norm = s.suggest_categorical("batch_norm", (True, False))
    dense = s.suggest_categorical("dense", tuple(DENSE_HEADS))
    dropout = s.suggest_float("dropout", DROPOUT[0], DROPOUT[1], step=DROPOUT[2])
    final_dropout = s.suggest_categorical("final_dropout", (False, True))
    padding = s.suggest_categorical("padding", PADDINGS)
    optimizer = suggest_optimizer(s)
    # Every parameter is suggested before any check, so the tuners see whole points even for pruned trials.
    fitting = max_convs_per_block(blocks, padding)
    if not fitting:
        raise InvalidConfiguration(
            f"{blocks} blocks of valid 3x3 convs and 2x2 pooling shrink a {IMAGE_SHAPE[0]}px input below 1x1 "
            "even with one conv per block (padding 'same' reaches 6 blocks)"
        )
    effective = min(convs, fitting)  # constrain rather than prune: more convs than fit become the most that fit
    widths = [min(MAX_WIDTH, round(base * growth**block)) for block in range(blocks)]
    kwargs = {
        "widths": widths,
        "convs": [effective] * blocks,
        "activation": activation,
        "batch_norm": bool(batch_norm),
        "dense": list(DENSE_HEADS[dense]),
        "dropout": round(dropout, 2),
        "final_dropout": bool(final_dropout),
        "padding": padding,
    }
    cost = architecture_cost("cnn", **kwargs)
    parameters = cost.parameters
    if parameters > MAX_PARAMETERS:
        raise InvalidConfiguration(
            f"{parameters:,} parameters exceed the widen space's cap of {MAX_PARAMETERS:,} "
            f"(widths {widths}, head {dense}: the flattened feature map feeds the first dense layer)"
        )
    derived = {
        "convs_effective": effective,
        "widths": widths,
        "depth": blocks * effective,
        "max_width": max(widths),
        "parameters": parameters,
        "gmacs": round(cost.gmacs, 4),
    }
    return Sample("cnn", kwargs, optimizer, derived=derived)
