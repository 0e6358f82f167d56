"""What the hostile-input tests share: the one-line refusal check through the CLI, a tiny model, the first image."""

from __future__ import annotations

from pathlib import Path

import keras
from conftest import train_ids_of

from harness.cli import main


def refused(capsys, *argv: str, expect: tuple[str, ...] = ()) -> str:
    """Run the CLI in this process: any exception escaping main() fails the test (a crash)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    # The error is the last line and the only one (a progress bar may come before it).
    assert lines and lines[-1].startswith("error: ") and all(line.startswith("decoding") for line in lines[:-1]), err
    assert "Traceback" not in err and len(lines[-1]) < 1200, err[:2000]
    for fragment in expect:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def first_train_image(root: Path) -> Path:
    return next((root / "train").glob(f"{train_ids_of(root)[0]}.*"))


def tiny_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
