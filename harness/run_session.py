"""One `harness run`: which targets resume and which train anew, the demo's budget, the clock's share of each run and
the epochs that fit it, then each run with its one-line outcome. The policy the CLI and the library share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness.clock import Deadline
from harness.config import RunSpec
from harness.errors import HarnessError
from harness.plans import plan as make_plan
from harness.store.runs import RunRecord, RunStore
from harness.workspace import Workspace


@dataclass(frozen=True)
class Job:
    """One run to do: its spec, and the id of the stored run it goes on with (None: a new run)."""

    spec: RunSpec
    resumed: str | None = None


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def jobs_for(
    targets: str | Iterable[str],
    ws: Workspace,
    *,
    resume: bool = False,
    full_budget: bool = False,
    **settings: Any,
) -> tuple[list[Job], list[str]]:
    """The runs `harness run TARGETS` does, and the lines that explain a budget it chose (the demo's)."""
    from harness.training.runner import continues, resume_spec

    store = ws.store()
    names = [targets] if isinstance(targets, str) else list(targets)
    changed = sorted(k for k, v in settings.items() if v is not None)
    if resume and changed:
        raise HarnessError(f"--resume continues a run with its own settings; drop {', '.join(changed)}")
    # A run that stopped before finishing goes on from its checkpoint, under its own id.
    going_on = list(dict.fromkeys(names)) if resume else [t for t in names if not changed and continues(store, t)]
    jobs = [Job(resume_spec(store, t), t) for t in going_on]
    rest = [t for t in names if t not in going_on]
    specs = make_plan(rest, store, **settings) if rest else []
    lines: list[str] = []
    if ws.data is None and settings.get("epochs") is None and not full_budget:
        from harness.data.demo import demo_budget

        specs, note = demo_budget(specs)
        lines += [note] if note else []
    return jobs + [Job(spec) for spec in specs], lines


def check_resumed_data(jobs: list[Job], store: RunStore, dataset_root: str) -> None:
    for job in jobs:
        if job.resumed is None:
            continue
        trained_on = store.get(job.resumed).dataset
        if trained_on and str(trained_on) != str(dataset_root):
            raise HarnessError(f"run {job.resumed} trained on {trained_on}; resume it with --data {trained_on}")


def describe(spec: RunSpec) -> str:
    training = spec.training
    return (
        f"{spec.architecture}: {plural(training.epochs, 'epoch')}, batch {training.batch_size}, "
        f"{training.optimizer.name}({training.optimizer.learning_rate:g}), protocol {spec.data.protocol}"
        + (f", sample {spec.data.sample}" if spec.data.sample else "")
    )


def run_jobs(
    ws: Workspace,
    jobs: list[Job],
    *,
    progress: bool = False,
    save_optimizer: bool = False,
    keep_checkpoints: bool = False,
    deadline: Deadline | None = None,
    size_epochs: bool = False,
) -> list[RunRecord]:
    """Train each job and print its outcome; on a clock, each run gets an equal share of the time left (sized to it
    where `size_epochs` and its schedule decays) and results/submission.csv holds the best so far by val AUC."""
    from harness.backend import devices
    from harness.ranking.keeper import SubmissionKeeper
    from harness.ranking.leaderboard import val_key
    from harness.terminal.progress import DeadlineClock, run_plan
    from harness.training.memory import check_fits
    from harness.training.runner import Runner
    from harness.training.speed import sized_to

    store = ws.store()
    accelerated = bool(devices())
    for job in jobs:  # before any data is decoded or any run starts: an impossible model is one line now
        check_fits(job.spec, on_accelerator=accelerated)
    dataset = ws.dataset(progress=progress)
    check_resumed_data(jobs, store, str(dataset.root))
    console = ws.console

    def say(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True)

    runner = Runner(dataset, store, ws.results, progress=progress, console=console, save_optimizer=save_optimizer)
    runner.keep_checkpoints = keep_checkpoints
    keeper = SubmissionKeeper(ws.results, say) if deadline is not None else None
    overall = runner.overall = DeadlineClock(deadline) if deadline else run_plan([job.spec for job in jobs])
    records = []
    for i, job in enumerate(jobs, 1):
        spec = job.spec
        if deadline is not None:
            if deadline.left() < 30:
                say(f"run {i}/{len(jobs)} {spec.architecture}: not started, {deadline.left():.0f} s of the clock left")
                continue
            runner.deadline = deadline.share(len(jobs) - i + 1)
            if size_epochs and job.resumed is None and spec.training.lr_schedule != "constant":
                spec, line = sized_to(spec, runner, runner.deadline)
                say(line)
        if overall is not None and hasattr(overall, "start_run"):
            overall.start_run(i - 1)
        again = f" (resuming {job.resumed} from its checkpoint)" if job.resumed else ""
        console.print(f"[bold]run {i}/{len(jobs)}[/bold] {describe(spec)}{again}", soft_wrap=True)
        record = runner.run(spec, run_id=job.resumed, resume=job.resumed is not None)
        records.append(record)
        say_outcome(console, spec, record)
        if keeper is not None and record.status == "complete" and record.submission:
            keeper.offer(record, val_key(record))
    return records


def say_outcome(console: Any, spec: RunSpec, record: RunRecord) -> None:
    if record.status == "complete":
        # The epoch lines showed these very scores for the kept epoch, unless TTA or folds change them.
        how = (f" with TTA {spec.training.tta}" if spec.training.tta > 1 else "") + (
            f", mean of {spec.data.folds} folds" if spec.data.folds > 1 else ""
        )
        console.print(
            f"  [green]complete[/green] val acc {record.val_accuracy:.4f}  val AUC {record.val_auc:.4f}{how}  "
            f"(epoch {record.best_epoch} kept)  {record.images_per_second:.0f} img/s  -> {record.artifacts}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(f"  [red]{record.status}[/red]: {record.error}", soft_wrap=True)
