"""The prepare rate (validate, decode into a fresh cache) for 1 to 16 decode threads and the default (issue 16)."""

import os
import shutil
import sys
import tempfile
import time

from harness.data import load_dataset


def main(data: str) -> None:
    load_dataset(data, tempfile.mkdtemp(), progress=False)  # warm the file cache once
    n = sum(1 for _ in os.scandir(os.path.join(data, "train"))) + sum(1 for _ in os.scandir(os.path.join(data, "test")))
    print(f"{n} images, {os.cpu_count()} cores")
    for threads in (1, 2, 4, 8, 16, None):
        best = float("inf")
        for _ in range(3):
            cache = tempfile.mkdtemp()
            start = time.perf_counter()
            load_dataset(data, cache, progress=False, workers=threads)
            best = min(best, time.perf_counter() - start)
            shutil.rmtree(cache)
        print(f"threads {threads or 'default':>7}: {best:6.2f} s  {n / best:8.0f} img/s")


if __name__ == "__main__":
    main(sys.argv[1])
