"""`harness bench`: the seed notebook's pipeline against the harness's, stage by stage, in images a second."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.data import LABELS_CSV, SUBMISSION_CSV, Dataset, load_dataset
from harness.errors import HarnessError

STAGES = ("prepare", "feed", "train", "predict")
# Least harness/seed ratio per stage (issue 5); train: no slower than the seed for the same model and batch.
TARGETS = {"prepare": 20.0, "feed": 10.0, "train": 1.0, "predict": 4.0}
FEED_OVER_TRAIN = 5.0  # the feed must outrun training by this much, or it is the bottleneck
MIN_PREPARE_SIZE = 20
SEED_BATCH = 50


@dataclass(frozen=True)
class BenchOptions:
    """What to measure, on which images, how often."""

    data: Path | None = None
    synthetic: int | None = None  # generate a folder of this many labelled images (test: Kaggle's proportion)
    stages: tuple[str, ...] = STAGES
    repeats: int = 3
    models: tuple[str, ...] = ("seed_model2",)
    sample: int | None = None  # labelled images for feed, train and predict (default: the folder, up to seed_limit)
    sizes: tuple[int, ...] | None = None  # prepare at these sizes (default: sample/10, sample and the whole folder)
    seed_limit: int = 20_000  # the seed's quadratic PrepareData runs up to here; beyond, it is extrapolated
    steps: int = 20  # timed training steps per repeat
    warmup: int = 3  # untimed steps first (tracing, caches)
    predict_images: int = 1000
    predict_batch_size: int = 512
    knobs: bool = True  # also time the harness with mixed_bfloat16, XLA and batch 256
    data_check: bool = True  # time `harness data check` on the largest size in a subprocess: seconds and peak RSS
    work: Path | None = None  # scratch folder (default: the system's temporary folder)
    json_path: Path | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise HarnessError(f"--stages: unknown stage {unknown[0] if unknown else '(none)'}; use {','.join(STAGES)}")
        if self.data is not None and self.synthetic is not None:
            raise HarnessError("give --data DIR or --synthetic N, not both")
        for name in ("repeats", "steps", "predict_images", "predict_batch_size", "seed_limit"):
            if getattr(self, name) < 1:
                raise HarnessError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 1:
            raise HarnessError(f"warmup must be at least 1 step (the first steps trace the model), got {self.warmup}")
        if self.synthetic is not None and self.synthetic < MIN_PREPARE_SIZE:
            raise HarnessError(f"--synthetic must be at least {MIN_PREPARE_SIZE}, got {self.synthetic}")
        if self.sample is not None and self.sample < MIN_PREPARE_SIZE:
            raise HarnessError(f"--sample must be at least {MIN_PREPARE_SIZE}, got {self.sample}")
        if self.sizes is not None and (not self.sizes or min(self.sizes) < MIN_PREPARE_SIZE):
            raise HarnessError(f"--sizes must each be at least {MIN_PREPARE_SIZE}, got {list(self.sizes)}")


@dataclass
class Row:
    """One line of the table: both ways' images/s on the same images, their ratio and the target it must meet."""

    stage: str
    what: str
    images: int
    seed: float | None = None
    harness: float | None = None
    target: float | None = None
    ratio: float | None = None
    note: str = ""
    seed_estimated: bool = False
    baseline: float | None = None  # knob rows: the harness's default rate they are compared with

    def __post_init__(self) -> None:
        if self.ratio is None and self.seed and self.harness:
            self.ratio = self.harness / self.seed

    @property
    def met(self) -> str:
        if self.target is not None and self.ratio is not None:
            return "yes" if self.ratio >= self.target else "NO"
        if self.baseline and self.harness:
            return "helps" if self.harness > 1.05 * self.baseline else "no gain"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "met": self.met}


@dataclass
class BenchResult:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "notes": self.notes, "environment": self.environment}


def run_bench(options: BenchOptions, console: Console | None = None) -> BenchResult:
    """Measure every requested stage both ways; the scratch folder is removed at the end."""
    console = console or Console(stderr=True)
    base = Path(options.work) if options.work else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="harness-bench-", dir=base))
    try:
        bench = _Bench(options, console, work)
        bench.run()
        if options.json_path:
            Path(options.json_path).write_text(json.dumps(bench.result.to_dict(), indent=2, default=str))
        return bench.result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def render(result: BenchResult, title: str = "harness vs the seed notebook") -> Table:
    table = Table(title=title, header_style="bold", title_justify="left")
    for column in ("stage", "measure", "images", "seed img/s", "harness img/s", "ratio", "target", "met", "note"):
        table.add_column(column, justify="right" if column in ("images", "seed img/s", "harness img/s") else "left")
    for row in result.rows:
        seed = "" if row.seed is None else ("~" if row.seed_estimated else "") + _rate(row.seed)
        table.add_row(
            row.stage,
            row.what,
            f"{row.images:,}",
            seed,
            "" if row.harness is None else _rate(row.harness),
            "" if row.ratio is None else f"{row.ratio:,.1f}x",
            "" if row.target is None else f">= {row.target:g}x",
            row.met,
            row.note,
        )
    return table


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


class _Bench:
    """State shared by the stages: the folder, its subsets, their caches and the seed's prepared folders."""

    def __init__(self, options: BenchOptions, console: Console, work: Path) -> None:
        self.options = options
        self.console = console
        self.work = work
        self.result = BenchResult()
        self.root = self._data_folder()
        from harness.data import _read_labels, _scan_folder

        ids, labels = _read_labels(self.root / LABELS_CSV)
        self.ids = np.asarray(ids)
        self.labels = labels
        self.test_files = sorted(os.path.basename(p) for p in _scan_folder(self.root, "test").values())
        self.full = len(self.ids)
        self.main = min(options.sample or min(self.full, options.seed_limit), self.full)
        self._folders: dict[int, Path] = {self.full: self.root}
        self._caches: dict[int, Path] = {}
        self._seed_prepared: dict[int, Any] = {}
        self._feed: tuple[int, float] | None = None  # images per epoch, images/s
        self._train_rates: dict[str, tuple[float, str]] = {}  # the fastest harness training rate, and how
        self._ceiling: float | None = None

    # ------------------------------------------------------------------ set-up

    def _data_folder(self) -> Path:
        if self.options.data is not None:
            root = Path(self.options.data).expanduser()
            if not (root / LABELS_CSV).is_file():
                raise HarnessError(f"{root} is not a Kaggle folder: {LABELS_CSV}, train/ and test/ are expected")
            return root
        from harness.data.synth import KAGGLE_TEST, KAGGLE_TRAIN, write_kaggle_folder

        n = self.options.synthetic or 2000
        n_test = max(1, round(n * KAGGLE_TEST / KAGGLE_TRAIN))
        self.console.print(f"generating a synthetic Kaggle folder: {n:,} train and {n_test:,} test .tif images")
        start = time.perf_counter()
        root = write_kaggle_folder(self.work / "synthetic", n, n_test)
        self.result.notes.append(
            f"synthetic folder: {n:,} + {n_test:,} uncompressed .tif written in {time.perf_counter() - start:.1f} s"
        )
        return root

    def n_test(self, size: int) -> int:
        if size >= self.full:
            return len(self.test_files)
        return max(1, round(size * len(self.test_files) / self.full))

    def folder(self, size: int) -> Path:
        """A Kaggle folder with `size` of the labelled images (hard links), Kaggle's label mix, n1 <= n0."""
        if size in self._folders:
            return self._folders[size]
        n1_all = int(self.labels.sum())
        n1 = min(round(size * n1_all / self.full), size // 2, n1_all)
        n0 = min(size - n1, self.full - n1_all)
        pick = np.zeros(self.full, dtype=bool)
        pick[np.flatnonzero(self.labels == 0)[:n0]] = True
        pick[np.flatnonzero(self.labels == 1)[:n1]] = True
        folder = self.work / f"subset-{size}"
        (folder / "train").mkdir(parents=True)
        (folder / "test").mkdir()
        train_names = {p.stem: p.name for p in (self.root / "train").iterdir()}
        for id_ in self.ids[pick]:
            _link(self.root / "train" / train_names[id_], folder / "train" / train_names[id_])
        test = self.test_files[: self.n_test(size)]
        for name in test:
            _link(self.root / "test" / name, folder / "test" / name)
        pd.DataFrame({"id": self.ids[pick], "label": self.labels[pick]}).to_csv(folder / LABELS_CSV, index=False)
        pd.DataFrame({"id": [os.path.splitext(n)[0] for n in test], "label": 0}).to_csv(
            folder / SUBMISSION_CSV, index=False
        )
        self._folders[size] = folder
        return folder

    def dataset(self, size: int) -> Dataset:
        """The harness's cache of a size's folder (built once, untimed, when the prepare stage did not build it)."""
        cache = self._caches.setdefault(size, self.work / f"cache-{size}")
        return load_dataset(self.folder(size), cache, progress=False)

    def seed_prepared(self, size: int) -> Any:
        if size not in self._seed_prepared:
            from harness.bench.seed_way import prepare

            target = self.work / f"seed-{size}"
            shutil.rmtree(target, ignore_errors=True)
            self._seed_prepared[size] = prepare(self.folder(size), target)
        return self._seed_prepared[size]

    # ------------------------------------------------------------------ stages

    def run(self) -> None:
        from harness.backend import devices, environment

        env = environment()
        self.result.environment = {**env, "load_average_start": os.getloadavg()}
        gpus = devices()
        self.result.notes.append(
            f"{env['backend']} {env['backend_version']}, keras {env['keras']}, {os.cpu_count()} CPUs, "
            + (f"accelerators: {', '.join(gpus)}" if gpus else "no GPU on this machine: CPU figures only")
        )
        stages = {"prepare": self.prepare, "feed": self.feed, "train": self.train, "predict": self.predict}
        for stage in STAGES:
            if stage in self.options.stages:
                self.console.print(f"[bold]{stage}[/bold] ...")
                stages[stage]()
        if self._feed is not None:
            n_feed, feed_rate = self._feed
            for model, (rate, how) in self._train_rates.items():
                self.result.rows.append(
                    Row(
                        "feed/train",
                        f"ImageBatches feed ÷ {model}'s fastest training ({how})",
                        n_feed,
                        harness=feed_rate,
                        ratio=feed_rate / rate,
                        target=FEED_OVER_TRAIN,
                        note=f"training {rate:,.0f} img/s: at >= 5x the feed is never the bottleneck",
                    )
                )
        self.result.environment["load_average_end"] = os.getloadavg()
        start, end = self.result.environment["load_average_start"][0], os.getloadavg()[0]
        self.result.notes.append(f"load average (1 min) {start:.1f} at the start, {end:.1f} at the end")

    def prepare(self) -> None:
        from harness.config import DataConfig
        from harness.data.splits import make_split

        options = self.options
        sizes = options.sizes or tuple(
            sorted({s for s in (self.main // 10, self.main, self.full) if s >= MIN_PREPARE_SIZE} or {self.main})
        )
        sizes = tuple(sorted({min(s, self.full) for s in sizes}))
        seed_points: list[tuple[int, float]] = []
        scaling = []
        for size in sizes:
            folder = self.folder(size)
            n_images = size + self.n_test(size)
            _warm(folder)  # both ways then read from the page cache: neither pays for the first read
            run_seed = size <= options.seed_limit  # PrepareData is pandas and OpenCV: any backend
            seed_times, ours, seed_cpu, ours_cpu = [], [], [], []
            for _ in range(options.repeats):
                if run_seed:
                    self._seed_prepared.pop(size, None)
                    cpu = time.process_time()
                    seed_times.append(self.seed_prepared(size).seconds)
                    seed_cpu.append(time.process_time() - cpu)
                cache = self._caches.setdefault(size, self.work / f"cache-{size}")
                shutil.rmtree(cache, ignore_errors=True)
                start, cpu = time.perf_counter(), time.process_time()
                make_split(load_dataset(folder, cache, progress=False), DataConfig())
                ours.append(time.perf_counter() - start)
                ours_cpu.append(time.process_time() - cpu)
            seed_s = median(seed_times) if seed_times else None
            if seed_s is not None:
                seed_points.append((n_images, seed_s))
            ours_s = median(ours)
            # CPU time counts work, not waiting: on a shared machine it is the steadier of the two figures.
            cpu_ours, cpu_seed = median(ours_cpu), median(seed_cpu)
            work = f"CPU {1e3 * cpu_ours / n_images:.2f} ms/image"
            if seed_cpu:
                work += f" vs seed {1e3 * cpu_seed / n_images:.2f} ({cpu_seed / cpu_ours:.0f}x less)"
            row = Row(
                "prepare",
                f"{size:,} labelled + {self.n_test(size):,} test: PrepareData vs data check + seed split",
                n_images,
                seed=n_images / seed_s if seed_s else None,
                harness=n_images / ours_s,
                target=TARGETS["prepare"],
                note=work,
            )
            if seed_s is None and len(seed_points) >= 2:
                estimate = _quadratic_fit(seed_points)(n_images)
                row.seed, row.seed_estimated = n_images / estimate, True
                row.ratio = n_images / ours_s / row.seed
                row.note = f"seed extrapolated (a·n + b·n² through its timings): ~{estimate / 3600:.1f} h; {work}"
            elif seed_s is None:
                row.note = f"seed not run (over --seed-limit); {work}"
            self.result.rows.append(row)
            scaling.append(
                f"{size:,}: harness {1e3 * ours_s / n_images:.3f} ms/image"
                + (f", seed {1e3 * seed_s / n_images:.2f} ms/image" if seed_s else "")
            )
        self.result.notes.append("prepare, time per image (flat = linear, growing = quadratic): " + "; ".join(scaling))
        if options.data_check:
            self._data_check(sizes[-1])

    def _data_check(self, size: int) -> None:
        """`harness data check` on a fresh cache in a subprocess: wall time and peak resident memory."""
        results = self.work / f"check-{size}"
        command = [sys.executable, "-m", "harness.cli", "data", "check", "--data", str(self.folder(size))]
        with tempfile.TemporaryFile() as errors:
            start = time.perf_counter()
            process = subprocess.Popen([*command, "--results", str(results)], stdout=subprocess.DEVNULL, stderr=errors)
            _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak RSS
            seconds = time.perf_counter() - start
            process.returncode = os.waitstatus_to_exitcode(status)
            errors.seek(0)
            error = errors.read().decode(errors="replace").strip().splitlines()
        if process.returncode != 0:
            raise HarnessError(f"harness data check failed ({process.returncode}): {error[-1] if error else ''}")
        decode = sum(json.loads(m.read_text())["decode_seconds"] for m in results.glob("cache/*/meta.json"))
        shutil.rmtree(results, ignore_errors=True)
        n_images = size + self.n_test(size)
        peak_gib = usage.ru_maxrss * 1024 / 2**30  # Linux reports KiB
        self.result.rows.append(
            Row(
                "prepare",
                f"`harness data check`, {n_images:,} images, new process",
                n_images,
                harness=n_images / seconds,
                note=f"{seconds:.1f} s in all ({decode:.1f} s decoding), peak RSS {peak_gib:.2f} GiB (must be < 4 GiB)",
            )
        )

    def feed(self) -> None:
        from harness.config import DataConfig
        from harness.data.feed import ImageBatches
        from harness.data.splits import make_split

        dataset = self.dataset(self.main)
        split = make_split(dataset, DataConfig())
        ours = ImageBatches(dataset.train.images, split.train, dataset.train.labels, SEED_BATCH, shuffle=True, seed=101)
        from harness.bench.seed_way import feed_seconds, train_generator

        seed_times, our_times = [], []
        generator, n_seed = train_generator(self.seed_prepared(self.main).train_dir), 0
        for _ in range(self.options.repeats):
            n_seed, seconds = feed_seconds(generator)
            seed_times.append(seconds)
            our_times.append(_epoch_seconds(ours))
        n = len(split.train)
        self._feed = (n, n / median(our_times))
        self.result.rows.append(
            Row(
                "feed",
                "one epoch, batch 50: flow_from_directory (PNG) vs ImageBatches (uint8 cache)",
                n,
                seed=n_seed / median(seed_times) if seed_times else None,
                harness=self._feed[1],
                target=TARGETS["feed"],
            )
        )
        if self.full > self.main:
            full = self.dataset(self.full)
            every = ImageBatches(full.train.images, np.arange(len(full.train)), full.train.labels, SEED_BATCH, True)
            seconds = _epoch_seconds(every)
            gib = full.train.images.nbytes / 2**30
            self.result.rows.append(
                Row(
                    "feed",
                    "one epoch over the whole cache, shuffled, batch 50",
                    len(full.train),
                    harness=len(full.train) / seconds,
                    note=f"{seconds:.1f} s for {gib:.1f} GiB of uint8 read through the memory map",
                )
            )

    def train(self) -> None:
        from harness.config import DataConfig
        from harness.data.splits import make_split

        dataset = self.dataset(self.main)
        split = make_split(dataset, DataConfig())
        for model_name in self.options.models:
            self._train_model(model_name, dataset, split.train, split.val)

    def _train_model(self, name: str, dataset: Dataset, train_index: np.ndarray, val_index: np.ndarray) -> None:
        """Seed and harness fits alternate, `steps` batches each; the rate is the median over all their batches."""
        import keras

        from harness.data.feed import ImageBatches
        from harness.training.train import compile_model, fit, make_optimizer

        options = self.options
        training = _training_config(name)
        batch = training.batch_size
        steps = options.steps
        needed = max(steps, options.warmup) * batch
        if needed > len(train_index):
            raise HarnessError(
                f"train: {steps} steps of {batch} need {needed} training images; the split has {len(train_index)}"
                " (lower --steps or raise --sample)"
            )
        images, labels = dataset.train.images, dataset.train.labels
        val = ImageBatches(images, val_index[:batch], labels, batch)

        def harness_way(model: keras.Model, batch_size: int) -> tuple[Callable[[], None], Any]:
            clock = batch_clock()
            config = _one_epoch(training, batch_size)

            def once(n_batches: int) -> None:
                index = train_index[: n_batches * batch_size]
                fit(model, ImageBatches(images, index, labels, batch_size, True, 101), val, config, [clock])

            once(options.warmup)
            clock.seconds.clear()
            return lambda: once(max(2, steps * SEED_BATCH // batch_size)), clock

        from harness.bench.seed_way import compile_like_notebook, train_generator

        self.console.print(f"  {name}: the seed's fit and the harness's, {options.repeats} x {steps} batches each")
        seed_model = compile_like_notebook(_build(name), make_optimizer(training.optimizer))
        generator = train_generator(self.seed_prepared(self.main).train_dir, batch)
        seed_clock = batch_clock()

        def seed_step(n_steps: int = steps) -> None:
            seed_model.fit(generator, epochs=1, steps_per_epoch=n_steps, verbose=0, callbacks=[seed_clock])

        seed_step(options.warmup)
        seed_clock.seconds.clear()
        ours_step, ours_clock = harness_way(compile_model(_with_pipeline(_build(name)), training), batch)
        ratios = []  # per repeat: their spread is the noise a "no slower" verdict must be read against
        for _ in range(options.repeats):
            seed_from, ours_from = len(seed_clock.seconds), len(ours_clock.seconds)
            seed_step()
            ours_step()
            ratios.append(ours_clock.rate(batch, since=ours_from) / seed_clock.rate(batch, since=seed_from))
        seed_rate = seed_clock.rate(batch)
        ours_rate = ours_clock.rate(batch)

        def record(what: str, images: int, rate: float, **more: Any) -> None:
            self.result.rows.append(Row("train", f"{name}{what}", images, seed=seed_rate, harness=rate, **more))

        self._train_rates[name] = (ours_rate, f"float32, batch {batch}")
        note = "median batch time; tracing and validation left out"
        if len(ratios) > 1:
            note += f"; per repeat {min(ratios):.2f}x to {max(ratios):.2f}x"
        what = f", batch {batch}: fit on flow_from_directory vs harness fit"
        record(what, options.repeats * steps * batch, ours_rate, target=TARGETS["train"], note=note)
        if not options.knobs:
            return
        for label, precision, jit, batch_size in (
            ("mixed_bfloat16", "mixed_bfloat16", False, batch),
            ("XLA (jit_compile)", "float32", True, batch),
            ("batch 256", "float32", False, 256),
        ):
            n_batches = max(2, steps * SEED_BATCH // batch_size)
            if max(n_batches, options.warmup) * batch_size > len(train_index):
                continue
            self.console.print(f"  {name}: harness + {label}")
            model = _with_pipeline(_build(name, precision))
            compile_model(model, _with_precision(training, precision))
            model.jit_compile = jit
            step, clock = harness_way(model, batch_size)
            for _ in range(options.repeats):
                step()
            rate = clock.rate(batch_size)
            note = f"{rate / ours_rate:.2f}x the harness's default"
            timed = options.repeats * n_batches * batch_size
            record(f", harness + {label}", timed, rate, baseline=ours_rate, note=note)
            if rate > self._train_rates[name][0]:
                self._train_rates[name] = (rate, label)
            del model
        keras.backend.clear_session()

    def predict(self) -> None:
        dataset = self.dataset(self.main)
        for model_name in self.options.models:
            self._predict_model(model_name, dataset)

    def matmul_gflops(self) -> float:
        """This machine's float32 matrix-product rate through the backend, measured once: the compute ceiling."""
        if self._ceiling is None:
            self._ceiling = matmul_gflops()
            self.result.notes.append(
                f"compute ceiling: float32 {MATMUL_SIZE}x{MATMUL_SIZE} matrix products at {self._ceiling:,.0f} GFLOP/s"
                " (median of 5); a predict row's % is its model's arithmetic rate against it"
            )
        return self._ceiling

    def _predict_model(self, name: str, dataset: Dataset) -> None:
        options = self.options
        folder = self.folder(self.main)
        files = self.test_files[: min(options.predict_images, self.n_test(self.main))]
        position = {id_: i for i, id_ in enumerate(dataset.test.ids.tolist())}
        index = np.asarray([position[os.path.splitext(f)[0]] for f in files], dtype=np.int64)
        batches = f"batch 1 (seed) and {options.predict_batch_size} (harness)"
        self.console.print(f"  {name}: {len(files):,} test images, {batches}")
        core = _build(name)
        ours = _with_pipeline(core)  # shares the core's weights: both ways run the very same model

        def ours_once(model: Any) -> tuple[float, np.ndarray]:
            start = time.perf_counter()
            probs = _predict(model, dataset.test.images, index, options.predict_batch_size)
            return time.perf_counter() - start, probs

        from harness.bench.seed_way import predict as seed_predict
        from harness.bench.seed_way import test_generator

        seed_predict(core, test_generator(folder / "test", files[:2]))  # trace once, as ours below
        generator = test_generator(folder / "test", files)
        ours_once(ours)
        seed_times, our_times = [], []
        for _ in range(options.repeats):
            start = time.perf_counter()
            seed_probs = seed_predict(core, generator)
            seed_times.append(time.perf_counter() - start)
            seconds, our_probs = ours_once(ours)
            our_times.append(seconds)
        n = len(files)
        ours_rate = n / median(our_times)
        seed_rate = n / median(seed_times)
        # Against the machine's float32 matmul rate: how far batching can go before arithmetic is the limit.
        flops = 2 * macs_per_image(core)
        ceiling = self.matmul_gflops()
        agree = (
            f"same predictions to {np.abs(seed_probs - our_probs).max():.0e}; {flops / 1e9:.2f} GFLOP/image: seed"
            f" {100 * seed_rate * flops / 1e9 / ceiling:.0f}%, harness {100 * ours_rate * flops / 1e9 / ceiling:.0f}%"
            f" of the {ceiling:,.0f} GFLOP/s float32 matmul ceiling"
        )
        self.result.rows.append(
            Row(
                "predict",
                f"{name}: flow_from_dataframe batch 1 vs harness batch {options.predict_batch_size}",
                n,
                seed=seed_rate,
                harness=ours_rate,
                target=TARGETS["predict"],
                note=agree,
            )
        )
        if not options.knobs:
            return
        for label, precision, jit in (
            ("mixed_bfloat16", "mixed_bfloat16", False),
            ("XLA (jit_compile)", "float32", True),
        ):
            model = _with_pipeline(_build(name, precision))
            model.set_weights(ours.get_weights())
            model.compile(jit_compile=jit)
            ours_once(model)
            times, probs = zip(*[ours_once(model) for _ in range(options.repeats)], strict=True)
            rate = n / median(list(times))
            self.result.rows.append(
                Row(
                    "predict",
                    f"{name}, harness + {label}",
                    n,
                    seed=seed_rate,
                    harness=rate,
                    baseline=ours_rate,
                    note=f"{rate / ours_rate:.2f}x the default; max |Δp| {np.abs(probs[-1] - our_probs).max():.0e}",
                )
            )


# ---------------------------------------------------------------------- helpers


def batch_clock() -> Any:
    """A new BatchClock callback; its class is made on first use, so importing harness.bench skips Keras."""
    global _BATCH_CLOCK
    if _BATCH_CLOCK is None:
        import keras

        class _BatchClock(keras.callbacks.Callback):
            """Seconds of each training batch but a fit's first (its iterator starts): no tracing, no validation."""

            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []
                self._last: float | None = None

            def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
                self._last = None

            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
                now = time.perf_counter()
                if self._last is not None:
                    self.seconds.append(now - self._last)
                self._last = now

            def rate(self, batch_size: int, since: int = 0) -> float:
                """Images/s at the median batch (from batch `since` on): a median shrugs off passing load."""
                seconds = self.seconds[since:]
                return batch_size / median(seconds) if seconds else math.nan

        _BATCH_CLOCK = _BatchClock
    return _BATCH_CLOCK()


_BATCH_CLOCK: Any = None


MATMUL_SIZE = 2048


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """float32 GFLOP/s of a size x size matrix product on the backend's device (the median of `repeats`)."""
    import keras

    a = keras.random.normal((size, size), seed=1)
    b = keras.random.normal((size, size), seed=2)
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # compile and warm up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])  # a GPU finishes before the value comes back
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / median(seconds) / 1e9


def macs_per_image(model: Any) -> int:
    """Multiply-accumulates of one forward pass (harness.cost's count, the same the scaling study uses)."""
    from harness.cost import model_macs

    return model_macs(model)


def _training_config(name: str) -> Any:
    from harness.config import TrainingConfig
    from harness.registry import ARCHITECTURES

    return ARCHITECTURES.get(name).meta.get("training") or TrainingConfig()


def _one_epoch(training: Any, batch_size: int) -> Any:
    changes: dict[str, Any] = {"epochs": 1, "batch_size": batch_size, "time_limit": None}
    if hasattr(training, "precise_bn"):
        changes["precise_bn"] = 0  # a calibration pass after the epoch: not training, and not timed
    return dataclasses.replace(training, **changes)


def _with_precision(training: Any, precision: str) -> Any:
    return dataclasses.replace(training, precision=precision) if hasattr(training, "precision") else training


def _build(name: str, precision: str = "float32") -> Any:
    from harness.training.train import build_core

    return build_core(name, precision)


def _with_pipeline(core: Any) -> Any:
    from harness.training.train import with_input_pipeline

    return with_input_pipeline(core)


def _predict(model: Any, images: np.ndarray, index: np.ndarray, batch_size: int) -> np.ndarray:
    from harness.training.runner import predict_probabilities

    return predict_probabilities(model, images, index, batch_size)


def _epoch_seconds(batches: Any) -> float:
    start = time.perf_counter()
    for i in range(len(batches)):
        batches[i]
    seconds = time.perf_counter() - start
    batches.on_epoch_end()
    return seconds


def _quadratic_fit(points: list[tuple[int, float]]) -> Callable[[float], float]:
    """Least-squares t(n) = a·n + b·n² (no constant: nothing to prepare costs nothing), a, b >= 0."""
    n = np.asarray([p[0] for p in points], dtype=np.float64)
    t = np.asarray([p[1] for p in points], dtype=np.float64)
    (a, b), *_ = np.linalg.lstsq(np.stack([n, n * n], axis=1), t, rcond=None)
    a, b = max(a, 0.0), max(b, 0.0)
    return lambda size: a * size + b * size * size


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(source, target)


def _warm(folder: Path) -> None:
    """Read every image once so that the first way timed does not pay the disk for both."""
    paths = [p for part in ("train", "test") for p in (folder / part).iterdir()]

    def read(chunk: list[Path]) -> None:
        for path in chunk:
            with open(path, "rb") as handle:
                handle.read()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(read, [paths[i : i + 1024] for i in range(0, len(paths), 1024)]))
