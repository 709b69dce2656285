"""Jepsen-style accounting of a fault scenario: every submit is recorded as the client saw it, and the
outcome of every accepted job is read back from the job table after a bounded wait."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from visionq.bench.service import Uploads


@dataclass
class Outcome:
    """The table a fault scenario prints (see `Ledger.settle`)."""

    accepted: int
    succeeded: int
    failed: Counter[str]
    lost: list[str]  # accepted, yet not terminal when the wait ended
    duplicated: int  # detections that ran to completion again after the job's result was stored
    redeliveries: int  # deliveries beyond each job's first
    refused: Counter[int]  # submits not accepted, by HTTP status
    slowest_submit_s: float

    def table(self, title: str) -> str:
        failed = ", ".join(f"{code} {n}" for code, n in sorted(self.failed.items())) or "0"
        refused = ", ".join(f"{status} x{n}" for status, n in sorted(self.refused.items())) or "none"
        rows = [
            ("accepted", str(self.accepted)),
            ("succeeded", str(self.succeeded)),
            ("failed", failed),
            ("lost", str(len(self.lost))),
            ("duplicated", str(self.duplicated)),
            ("redeliveries", str(self.redeliveries)),
            ("refused submits", refused),
            ("slowest submit", f"{self.slowest_submit_s:.2f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join([f"## {title}", *(f"{k.ljust(width)}  {v}" for k, v in rows)])


@dataclass
class Ledger:
    """Submits through the API (a new photo each time, `Uploads`) and keeps what each answer said."""

    client: httpx.Client
    uploads: Uploads
    accepted: list[str] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    slowest_submit_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0

    def submit(self) -> None:
        with self._lock:
            i, self._count = self._count, self._count + 1
        content, headers = self.uploads.body(i)
        started = time.monotonic()
        try:
            response = self.client.post("/v1/jobs", content=content, headers=headers, timeout=30)
            status = response.status_code
        except httpx.HTTPError:
            status = 0  # no answer at all
        elapsed = time.monotonic() - started
        with self._lock:
            self.slowest_submit_s = max(self.slowest_submit_s, elapsed)
            if status == 202:
                self.accepted.append(response.json()["id"])
            else:
                self.refused[status] += 1

    def submit_many(self, count: int, *, every_s: float = 0.0) -> None:
        for _ in range(count):
            self.submit()
            time.sleep(every_s)

    def settle(self, *, timeout_s: float, logs: Path) -> Outcome:
        """Wait until every accepted job is terminal or `timeout_s` has passed; then count (duplicates
        from the logs of every worker in the folder `logs`)."""
        deadline = time.monotonic() + timeout_s
        jobs: dict[str, dict[str, object]] = {}
        pending = list(self.accepted)
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                job = self.client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("queued", "running"):
                    still.append(job_id)
                jobs[job_id] = job
            pending = still
            if pending:
                time.sleep(1.0)
        failed: Counter[str] = Counter()
        for job in jobs.values():
            error = job.get("error")
            if job["status"] == "failed" and isinstance(error, dict):
                failed[str(error["code"])] += 1
        dropped = [
            line
            for log in sorted(logs.glob("*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if "finished elsewhere meanwhile" in line
        ]
        return Outcome(
            accepted=len(self.accepted),
            succeeded=sum(1 for job in jobs.values() if job["status"] == "succeeded"),
            failed=failed,
            lost=pending,
            duplicated=sum(1 for line in dropped if any(job_id in line for job_id in jobs)),
            redeliveries=sum(max(0, int(str(job["attempts"])) - 1) for job in jobs.values()),
            refused=self.refused,
            slowest_submit_s=self.slowest_submit_s,
        )


def report(capsys: pytest.CaptureFixture[str], outcome: Outcome, title: str) -> None:
    """Print a scenario's table past pytest's capture: the fault suite's output."""
    with capsys.disabled():
        sys.stdout.write(f"\n{outcome.table(title)}\n")
