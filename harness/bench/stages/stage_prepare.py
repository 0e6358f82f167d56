"""The prepare stage: the seed's PrepareData against `harness data check` (cache build and the seed's split),
in this process per size, and as whole new processes (imports and all) on the largest size."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from harness.bench.clocks import Process, median, whole_process
from harness.bench.options import MIN_PREPARE_SIZE, TARGETS
from harness.bench.table import Row

if TYPE_CHECKING:
    from harness.bench.stages.state import Bench


def run(bench: Bench) -> None:
    options, fixtures = bench.options, bench.fixtures
    main, full = fixtures.main, fixtures.full
    sizes = options.sizes or tuple(sorted({s for s in (main // 10, main, full) if s >= MIN_PREPARE_SIZE} or {main}))
    sizes = tuple(sorted({min(s, full) for s in sizes}))
    seed_points: list[tuple[int, float]] = []
    scaling = []
    for size in sizes:
        n_images = size + fixtures.n_test(size)
        seed_s, ours_s, row = _in_process(bench, size, n_images)
        if seed_s is not None:
            seed_points.append((n_images, seed_s))
        elif len(seed_points) >= 2:
            estimate = _quadratic_fit(seed_points)(n_images)
            row.seed, row.seed_estimated = n_images / estimate, True
            row.ratio = n_images / ours_s / row.seed
            row.note = f"seed extrapolated (a·n + b·n² through its timings): ~{estimate / 3600:.1f} h; {row.note}"
        else:
            row.note = f"seed not run (over --seed-limit); {row.note}"
        bench.result.rows.append(row)
        scaling.append(
            f"{size:,}: harness {1e3 * ours_s / n_images:.3f} ms/image"
            + (f", seed {1e3 * seed_s / n_images:.2f} ms/image" if seed_s else "")
        )
    bench.result.notes.append("prepare, time per image (flat = linear, growing = quadratic): " + "; ".join(scaling))
    if options.data_check:
        _whole_commands(bench, sizes[-1])


def _in_process(bench: Bench, size: int, n_images: int) -> tuple[float | None, float, Row]:
    """Both ways `repeats` times in this process, alternating: (seed seconds or None, harness seconds, its row)."""
    from harness.config import DataConfig
    from harness.data import load_dataset
    from harness.data.splits import make_split

    options, fixtures = bench.options, bench.fixtures
    folder = fixtures.folder(size)
    fixtures.warm(size)  # both ways then read from the page cache: neither pays for the first read
    run_seed = size <= options.seed_limit  # PrepareData is pandas and OpenCV: any backend
    seed_times, ours, seed_cpu, ours_cpu = [], [], [], []
    for _ in range(options.repeats):
        if run_seed:
            cpu = time.process_time()
            seed_times.append(fixtures.seed_prepared(size, fresh=True).seconds)
            seed_cpu.append(time.process_time() - cpu)
        cache = fixtures.cache(size)
        shutil.rmtree(cache, ignore_errors=True)
        start, cpu = time.perf_counter(), time.process_time()
        make_split(load_dataset(folder, cache, progress=False), DataConfig())
        ours.append(time.perf_counter() - start)
        ours_cpu.append(time.process_time() - cpu)
    seed_s = median(seed_times) if seed_times else None
    ours_s = median(ours)
    # CPU time counts work, not waiting: on a shared machine it is the steadier of the two figures.
    cpu_ours, cpu_seed = median(ours_cpu), median(seed_cpu)
    work = f"CPU {1e3 * cpu_ours / n_images:.2f} ms/image"
    if seed_cpu:
        work += f" vs seed {1e3 * cpu_seed / n_images:.2f} ({cpu_seed / cpu_ours:.0f}x less)"
    row = Row(
        "prepare",
        f"{size:,} labelled + {fixtures.n_test(size):,} test: PrepareData vs data check + seed split",
        n_images,
        seed=n_images / seed_s if seed_s else None,
        harness=n_images / ours_s,
        target=TARGETS["prepare"],
        note=work,
    )
    return seed_s, ours_s, row


def _whole_commands(bench: Bench, size: int) -> None:
    """`harness data check` (fresh results folder) against the notebook's PrepareData cell, each a new process
    from interpreter start to exit, alternating: what a user waits for. Also the check's peak resident memory."""
    options, fixtures = bench.options, bench.fixtures
    folder, n_test = fixtures.folder(size), fixtures.n_test(size)
    n_images = size + n_test
    run_seed = size <= options.seed_limit
    bench.console.print(f"  whole commands on {n_images:,} images: `harness data check` and the seed's PrepareData")
    fixtures.warm(size)
    ours: list[Process] = []
    seed: list[Process] = []
    decode = []
    for _ in range(options.repeats):
        if run_seed:
            target = fixtures.work / f"seed-process-{size}"
            shutil.rmtree(target, ignore_errors=True)
            command = [sys.executable, "-m", "harness.bench.seed_way", str(folder), str(target)]
            seed.append(whole_process(command, "the seed's PrepareData"))
            shutil.rmtree(target, ignore_errors=True)
        results = fixtures.work / f"check-{size}"
        shutil.rmtree(results, ignore_errors=True)
        command = [sys.executable, "-m", "harness.cli", "data", "check", "--data", str(folder), "--results"]
        ours.append(whole_process([*command, str(results)], "harness data check"))
        decode.append(sum(json.loads(m.read_text())["decode_seconds"] for m in results.glob("cache/*/meta.json")))
        shutil.rmtree(results, ignore_errors=True)
    ours_s = median([p.seconds for p in ours])
    seed_s = median([p.seconds for p in seed]) if seed else None
    peak = max(p.peak_gib for p in ours)
    note = f"{ours_s:.1f} s in all ({median(decode):.1f} s decoding), peak RSS {peak:.2f} GiB (must be < 4 GiB)"
    note = f"{note}; seed {seed_s:.1f} s in all" if seed_s is not None else f"seed not run (over --seed-limit); {note}"
    bench.result.rows.append(
        Row(
            "prepare",
            f"{size:,} labelled + {n_test:,} test, whole commands: PrepareData vs `harness data check`",
            n_images,
            seed=n_images / seed_s if seed_s else None,
            harness=n_images / ours_s,
            target=TARGETS["prepare"],
            note=note,
        )
    )


def _quadratic_fit(points: list[tuple[int, float]]) -> Callable[[float], float]:
    """Least-squares t(n) = a·n + b·n² (no constant: nothing to prepare costs nothing), a, b >= 0."""
    n = np.asarray([p[0] for p in points], dtype=np.float64)
    t = np.asarray([p[1] for p in points], dtype=np.float64)
    (a, b), *_ = np.linalg.lstsq(np.stack([n, n * n], axis=1), t, rcond=None)
    a, b = max(a, 0.0), max(b, 0.0)
    return lambda size: a * size + b * size * size
