"""A rollout's progress in segments for the progress bar: what succeeded, failed, was skipped or
cancelled, is running, and is still to come — so "partially failed" never looks all green."""

from __future__ import annotations

from dataclasses import dataclass

from .models import HostRun

HR = HostRun.State
SEGMENTS = (
    ("succeeded", "Succeeded", (HR.SUCCEEDED,)),
    ("failed", "Failed or drifted", (HR.FAILED, HR.DRIFTED)),
    ("skipped", "Skipped or cancelled", (HR.SKIPPED, HR.CANCELLED)),
    ("running", "Running", (HR.RUNNING, HR.REBOOTING, HR.WAITING)),
    ("pending", "Not started", (HR.PENDING,)),
)


@dataclass
class Segment:
    key: str
    label: str
    count: int
    start: float  # percent of the bar
    width: float


@dataclass
class Progress:
    total: int
    done: int
    segments: list[Segment]
    state_counts: list[tuple[str, int]]

    @property
    def shown(self) -> list[Segment]:
        return [s for s in self.segments if s.count]


def progress_of(runs: list[HostRun]) -> Progress:
    total = len(runs)
    by_state: dict[str, int] = {}
    for run in runs:
        by_state[run.state] = by_state.get(run.state, 0) + 1
    segments, start = [], 0.0
    for key, label, states in SEGMENTS:
        count = sum(by_state.get(s, 0) for s in states)
        width = round(100.0 * count / total, 2) if total else 0.0
        segments.append(Segment(key, label, count, round(start, 2), width))
        start += width
    done = sum(1 for r in runs if r.is_finished)
    return Progress(total=total, done=done, segments=segments, state_counts=sorted(by_state.items()))
