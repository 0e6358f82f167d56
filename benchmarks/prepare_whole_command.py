"""Time the notebook's PrepareData and `harness data check` side by side, each as a whole new process, fresh cache.

    python benchmarks/prepare_whole_command.py --data /work/shared/datasets/pcam-sample --repeats 3 --threads

Each repeat runs both commands back to back (alternating which goes first), each into a new temporary folder, and
prints wall seconds, CPU seconds (user + system, of the process and its threads) and the ratio; the summary gives
medians. The image files are read once first, untimed, so that neither side pays for the disk. The load average is
printed with every pair: on a shared machine, compare ratios, not seconds. With --threads, the decode rate of one
thread and of the default thread count is measured too, on fresh caches, in one process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = (
    "import sys; from pathlib import Path; from harness.bench.seed_way import prepare;"
    " prepare(Path(sys.argv[1]), Path(sys.argv[2]))"
)


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} ... failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def warm(data: Path) -> int:
    n = 0
    for part in ("train", "test"):
        with os.scandir(data / part) as entries:
            for entry in entries:
                with open(entry.path, "rb") as handle:
                    handle.read()
                n += 1
    return n


def seed_prepare(data: Path, scratch: Path) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(prefix="seed-", dir=scratch))
    try:
        return timed([sys.executable, "-c", SEED, str(data), str(work / "prepared")])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def data_check(data: Path, scratch: Path) -> tuple[float, float]:
    results = Path(tempfile.mkdtemp(prefix="harness-", dir=scratch))
    try:
        return timed(
            [sys.executable, "-m", "harness.cli", "data", "check", "--data", str(data), "--results", str(results)]
        )
    finally:
        shutil.rmtree(results, ignore_errors=True)


def thread_rates(data: Path, scratch: Path, rounds: int) -> None:
    """Images/s of load_dataset on a fresh cache with 1 decode thread and with the default, alternating."""
    from harness.data import load_dataset
    from harness.data.decode_pool import default_workers

    default = default_workers()
    rates: dict[int, list[float]] = {1: [], default: []}
    for _ in range(rounds):
        for workers in (1, default) if default != 1 else (1,):
            cache = Path(tempfile.mkdtemp(prefix="threads-", dir=scratch))
            try:
                start = time.perf_counter()
                ds = load_dataset(data, cache, progress=False, workers=workers)
                seconds = time.perf_counter() - start
                rates[workers].append((len(ds.train) + len(ds.test)) / seconds)
                del ds
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    for workers, values in rates.items():
        shown = ", ".join(f"{v:,.0f}" for v in values)
        label = "default" if workers == default else "1 thread"
        print(f"prepare rate, {label} ({workers} threads): median {statistics.median(values):,.0f} images/s ({shown})")
    print(f"CPUs this process may use: {default}; load average now {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/pcam-sample"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None, help="where the temporary folders go (default: /tmp)")
    parser.add_argument("--threads", action="store_true", help="also time 1 decode thread against the default")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="prepare-bench-", dir=args.scratch))
    try:
        n = warm(args.data)
        print(f"{args.data}: {n:,} image files (read once, untimed); {os.cpu_count()} CPUs")
        seeds, checks, ratios = [], [], []
        for k in range(args.repeats):
            load = os.getloadavg()[0]
            order = [("seed", seed_prepare), ("check", data_check)]
            if k % 2:
                order.reverse()
            got = {name: run(args.data, scratch) for name, run in order}
            (seed_wall, seed_cpu), (check_wall, check_cpu) = got["seed"], got["check"]
            seeds.append(seed_wall)
            checks.append(check_wall)
            ratios.append(seed_wall / check_wall)
            print(
                f"run {k + 1}: PrepareData {seed_wall:.2f} s (cpu {seed_cpu:.2f} s), harness data check"
                f" {check_wall:.2f} s (cpu {check_cpu:.2f} s): {seed_wall / check_wall:.1f}x"
                f" [load average {load:.2f} -> {os.getloadavg()[0]:.2f}]"
            )
        print(
            f"median of {args.repeats}: PrepareData {statistics.median(seeds):.2f} s, harness data check"
            f" {statistics.median(checks):.2f} s, ratio {statistics.median(ratios):.1f}x"
        )
        if args.threads:
            thread_rates(args.data, scratch, rounds=3)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
