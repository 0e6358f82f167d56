"""The feed stage: one epoch of batch 50 from the seed's PNG generator against the harness's uint8 cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.bench.clocks import epoch_seconds, median
from harness.bench.options import SEED_BATCH, TARGETS
from harness.bench.table import Row

if TYPE_CHECKING:
    from harness.bench.stages.state import Bench


def run(bench: Bench) -> None:
    from harness.bench.seed_way import feed_seconds, train_generator
    from harness.config import DataConfig
    from harness.data.feed import ImageBatches
    from harness.data.splits import make_split

    fixtures = bench.fixtures
    dataset = fixtures.dataset(fixtures.main)
    split = make_split(dataset, DataConfig())
    ours = ImageBatches(dataset.train.images, split.train, dataset.train.labels, SEED_BATCH, shuffle=True, seed=101)
    seed_times, our_times = [], []
    generator, n_seed = train_generator(fixtures.seed_prepared(fixtures.main).train_dir), 0
    for _ in range(bench.options.repeats):
        n_seed, seconds = feed_seconds(generator)
        seed_times.append(seconds)
        our_times.append(epoch_seconds(ours))
    n = len(split.train)
    bench.feed_rate = (n, n / median(our_times))
    bench.result.rows.append(
        Row(
            "feed",
            "one epoch, batch 50: flow_from_directory (PNG) vs ImageBatches (uint8 cache)",
            n,
            seed=n_seed / median(seed_times) if seed_times else None,
            harness=bench.feed_rate[1],
            target=TARGETS["feed"],
        )
    )
    if fixtures.full > fixtures.main:
        full = fixtures.dataset(fixtures.full)
        every = ImageBatches(full.train.images, np.arange(len(full.train)), full.train.labels, SEED_BATCH, True)
        seconds = epoch_seconds(every)
        gib = full.train.images.nbytes / 2**30
        bench.result.rows.append(
            Row(
                "feed",
                "one epoch over the whole cache, shuffled, batch 50",
                len(full.train),
                harness=len(full.train) / seconds,
                note=f"{seconds:.1f} s for {gib:.1f} GiB of uint8 read through the memory map",
            )
        )
