"""The studies' stage scheduler: every stage runs once the stages it needs have finished, up to N at once.

The demo (:mod:`crs.study.demo`) runs its pipeline with it, the sweep (:mod:`crs.study.sweep`)
its RL runs: a stage is one ``crs`` command, and the runner it is given runs one stage (in a
worker thread) and raises when the stage fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One `crs` command of a study and the stages (by name) whose outputs it reads."""

    command: str
    subset: str
    after: tuple[str, ...] = ()
    run_name: str | None = None  # where a study runs one subset more than once (the sweep's runs)

    @property
    def name(self) -> str:
        """What ``after`` and ``done`` call it: its ``run_name``, else its subset."""
        return self.run_name or self.subset


class StageFailed(RuntimeError):
    """A stage exited with an error; the message says which and where its output is."""


def needs(stage: Stage, stages: Sequence[Stage]) -> set[str]:
    """Every stage ``stage`` waits for, directly or through others."""
    by_name = {s.name: s for s in stages}
    found: set[str] = set()
    todo = list(stage.after)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(by_name[name].after if name in by_name else ())
    return found


def run_stages(
    stages: Sequence[Stage], jobs: int, run: Callable[[Stage, bool], None], done: set[str] | None = None
) -> None:
    """Run every stage not in ``done``, at most ``jobs`` at once, each once all its ``after`` are done.

    ``run(stage, alone)`` runs one stage (in a worker thread) and raises on failure; ``alone``
    says that nothing else can run beside it (nothing running, every other stage left waits
    for it), so it may take every core. After a failure no new stage starts; the running ones
    finish, then the first failure is raised.
    """
    done = set(done or ())
    pending = [s for s in stages if s.name not in done]
    running: set[str] = set()
    failures: list[BaseException] = []
    changed = threading.Condition()

    def worker(stage: Stage, alone: bool) -> None:
        error = None
        try:
            run(stage, alone)
        except BaseException as caught:  # raised again by the scheduling thread
            error = caught
        with changed:
            running.discard(stage.name)
            if error is None:
                done.add(stage.name)
            else:
                failures.append(error)
            changed.notify_all()

    with changed:
        while True:
            if failures:
                if not running:
                    raise failures[0]
            else:
                ready = [s for s in pending if all(need in done for need in s.after)]
                for stage in ready[: max(jobs - len(running), 0)]:
                    pending.remove(stage)
                    alone = not running and all(stage.name in needs(other, stages) for other in pending)
                    running.add(stage.name)
                    threading.Thread(target=worker, args=(stage, alone), daemon=True).start()
                if not pending and not running:
                    return
                if not running:
                    missing = sorted({need for s in pending for need in s.after} - done)
                    raise StageFailed(f"stages {[s.name for s in pending]} wait for {missing}, which never finish")
            changed.wait()
