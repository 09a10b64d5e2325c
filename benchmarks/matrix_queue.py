"""The queue of the benchmark matrix: cell claims (an exclusive `flock` per cell), each cell's status, the cell
processes (`python benchmarks/matrix.py --dataset ... --method ... --seed ...`) and the worker loop that runs a plan's
cells in priority order, each once, a student only after its teacher."""

from __future__ import annotations

import datetime
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.matrix_data import write_json_atomically

if TYPE_CHECKING:
    from benchmarks.matrix import Cell, Layout

MATRIX_SCRIPT = Path(__file__).resolve().with_name("matrix.py")
"""The script a cell process runs."""


@dataclass
class CellClaim:
    """An exclusive `flock` on a cell's lock file, held until `release` (or until every holder has exited)."""

    path: Path
    descriptor: int

    def record(self, text: str) -> None:
        """Replaces the lock file's content (who holds it; for people and `--dry_run`)."""
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, text.encode(), 0)

    def release(self) -> None:
        fcntl.flock(self.descriptor, fcntl.LOCK_UN)
        os.close(self.descriptor)


def claim_cell(lock_file: Path) -> CellClaim | None:
    """Claims a cell: an exclusive, non-blocking `flock` on its lock file, which then records this process's pid.

    The lock files are never deleted (deleting one could let two processes lock two different files of the same
    name). A lock file left by a process that has died holds no lock any more and is claimed again.

    Returns:
        The claim, or `None` when another process (or another claim in this process) holds the cell.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    claim = CellClaim(lock_file, descriptor)
    claim.record(f"worker pid {os.getpid()}\n")
    return claim


def is_claimed(lock_file: Path) -> bool:
    """Whether a live process holds the cell's lock."""
    if not lock_file.is_file():
        return False
    claim = claim_cell(lock_file)
    if claim is None:
        return True
    claim.release()
    return False


def cell_status(cell: Cell, layout: Layout) -> str:
    """`done`, `running`, `failed`, `waiting for teacher` or `todo`."""
    if layout.is_done(cell):
        return "done"
    if is_claimed(layout.lock_file(cell)):
        return "running"
    if layout.failure_file(cell).is_file():
        return "failed"
    return "todo" if layout.teacher_ready(cell) else "waiting for teacher"


Launcher = Callable[["Cell", CellClaim], int]
"""Runs one claimed cell to its end and returns its exit status."""


@dataclass
class CellCommand:
    """Runs cells as `python benchmarks/matrix.py --dataset ... --method ... --seed ...` processes."""

    layout: Layout
    common_flags: list[str]
    threads: int = 1
    worker_id: int = 0
    python: str = sys.executable
    environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def command(self, cell: Cell) -> list[str]:
        cell_flags = ["--dataset", cell.dataset, "--method", cell.method, "--seed", str(cell.seed)]
        return [self.python, str(MATRIX_SCRIPT), *cell_flags, *self.common_flags]

    def __call__(self, cell: Cell, claim: CellClaim) -> int:
        """Runs the cell with its log in `logs/`; the process inherits the lock, so the cell stays claimed while it
        runs even if this worker dies."""
        log_file = self.layout.log_file(cell)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        environment = {**self.environment, "OMP_NUM_THREADS": str(self.threads)}
        with log_file.open("a", encoding="utf-8") as log:
            started = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"===== {started} worker {self.worker_id} (pid {os.getpid()}): {' '.join(self.command(cell))}\n")
            log.flush()
            process = subprocess.Popen(
                self.command(cell), stdout=log, stderr=subprocess.STDOUT, env=environment, pass_fds=(claim.descriptor,)
            )
            claim.record(f"worker pid {os.getpid()}, cell pid {process.pid}\n")
            return process.wait()


def warm_teachers_first(plan: Sequence[Cell], layout: Layout) -> list[Cell]:
    """`plan` with the cells that train on a teacher saved on this machine moved to the front (in plan order).

    Teachers' models are not committed: on a new machine every teacher is trained again before its students (25-60
    minutes a teacher). Students of a teacher that is already here come first, so that a session uses the teachers
    it has before it trains another one.
    """
    warm = [cell for cell in plan if cell.needs_teacher and layout.teacher_ready(cell)]
    return warm + [cell for cell in plan if cell not in warm]


def next_cell(plan: Sequence[Cell], layout: Layout, skip_failed: bool = True) -> tuple[Cell, CellClaim] | None:
    """Claims the first cell that is not done, not failed, not claimed and whose teacher is done, in plan order with
    the students of the teachers saved on this machine first (`warm_teachers_first`)."""
    for cell in warm_teachers_first(plan, layout):
        if layout.is_done(cell) or not layout.teacher_ready(cell):
            continue
        if skip_failed and layout.failure_file(cell).is_file():
            continue
        claim = claim_cell(layout.lock_file(cell))
        if claim is None:
            continue
        if layout.is_done(cell):  # finished by another worker between the check and the claim
            claim.release()
            continue
        return cell, claim
    return None


def run_queue(
    plan: Sequence[Cell],
    layout: Layout,
    launch: Launcher,
    worker_id: int = 0,
    poll_seconds: float = 60.0,
    retry_failed: bool = False,
) -> list[Cell]:
    """Runs the plan's cells until none is left that this worker can take.

    A worker waits (polling) while other workers run cells it could take later (a teacher, or a cell another
    worker holds), and stops when every remaining cell is done, failed, or waits for a failed teacher.

    Args:
        plan: Cells in priority order.
        layout: Folders of the protocol.
        launch: Runs one claimed cell and returns its exit status.
        worker_id: Number of this worker in messages.
        poll_seconds: Pause between looks at the queue while only others' cells run.
        retry_failed: Also take cells that failed before (once per worker).

    Returns:
        The cells this worker ran.
    """
    ran: list[Cell] = []
    tried: set[Cell] = set()
    while True:
        taken = next_cell([cell for cell in plan if cell not in tried], layout, skip_failed=not retry_failed)
        if taken is None:
            if not others_running(plan, layout):
                break
            time.sleep(poll_seconds)
            continue
        cell, claim = taken
        tried.add(cell)
        print(f"[worker {worker_id}] {cell.key}: started, log {layout.log_file(cell)}", flush=True)
        start = time.perf_counter()
        try:
            status = launch(cell, claim)
            record_outcome(cell, layout, status)
        finally:
            claim.release()
        ran.append(cell)
        outcome = "done" if status == 0 and layout.is_done(cell) else f"FAILED (exit status {status})"
        print(f"[worker {worker_id}] {cell.key}: {outcome} after {time.perf_counter() - start:.0f} s", flush=True)
    left = [cell.key for cell in plan if not layout.is_done(cell)]
    print(f"[worker {worker_id}] stopping: {len(plan) - len(left)} of {len(plan)} cells done", flush=True)
    if left:
        print(f"[worker {worker_id}] not done (failed, or waiting for a failed teacher): {', '.join(left)}")
    return ran


def others_running(plan: Sequence[Cell], layout: Layout) -> bool:
    """Whether a cell of the plan that is not done, or the teacher of one, is claimed by a live process."""
    remaining = [cell for cell in plan if not layout.is_done(cell)]
    watched = dict.fromkeys([*remaining, *(cell.teacher for cell in remaining if cell.needs_teacher)])
    return any(is_claimed(layout.lock_file(cell)) for cell in watched)


def record_outcome(cell: Cell, layout: Layout, status: int) -> None:
    """A failed cell (non-zero exit, or no result file) gets a failure record; a finished one loses it."""
    failure_file = layout.failure_file(cell)
    if status == 0 and layout.is_done(cell):
        failure_file.unlink(missing_ok=True)
        return
    when = datetime.datetime.now().isoformat(timespec="seconds")
    write_json_atomically(failure_file, {"exit_status": status, "log": str(layout.log_file(cell)), "time": when})


def print_plan(plan: Sequence[Cell], layout: Layout) -> None:
    """One line per cell: its priority, status and result or log file."""
    statuses = [cell_status(cell, layout) for cell in plan]
    for index, (cell, status) in enumerate(zip(plan, statuses), start=1):
        where = layout.result_file(cell) if status == "done" else layout.log_file(cell)
        print(f"{index:>3}  {cell.dataset:<11} {cell.run_name:<14} seed {cell.seed}  {status:<20} {where}")
    counts = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
    print(", ".join(f"{count} {status}" for status, count in counts.items()))
