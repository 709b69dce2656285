"""The job reads stay on their indexes on a 100,000-job table: the plans of the store's own statements.

Each read runs through the real `JobStore`; its statement and parameters are captured on the way to the
driver and explained as they are, so a change to the store's SQL is checked here without a change here.
`pytest -s` prints every plan.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, insert, select, text

from visionq.api.routes.jobs import MAX_PAGE
from visionq.store.cursor import encode_cursor
from visionq.store.db import create_engine_for, migrate
from visionq.store.jobs import JobStore
from visionq.store.status import JobStatus
from visionq.store.tables import ImageRow, JobRow
from visionq.store.types import ImageIn, Job

JOBS = 100_000
IMAGES = 5
# The widest page a client may ask for: the most rows a page has to read.
LIMIT = MAX_PAGE

# A healthy service some way into its life: 78% succeeded, 10% failed, 10% cancelled, 1% queued (a short
# backlog), 1% running. Job n gets STATUSES[n % 100]. A rare status is what a filtered page must not look
# for by walking the newest-first index: a page of queued jobs would read 10,000 rows that way.
STATUSES = [JobStatus.SUCCEEDED] * 78 + [JobStatus.FAILED] * 10 + [JobStatus.CANCELLED] * 10
STATUSES += [JobStatus.QUEUED, JobStatus.RUNNING]
# Below this share of the jobs, a status's page must come off the status index.
_RARE = 0.05

# SQLite has no row counts in its plans, so its virtual machine's steps are counted instead: about 30
# per row returned here (index entry, table row, image lookup, 18 columns); skipping one index entry costs
# about 2, so a walk from the newest job down to the middle one would take 100,000.
_SQLITE_STEP_BUDGET = 50 * (LIMIT + 1)

# The index each backend gives the primary key.
_PRIMARY_KEY = "primary key"
_PRIMARY_KEY_INDEX = {"postgresql": "pk_jobs", "sqlite": "sqlite_autoindex_jobs_1"}


@dataclass(frozen=True)
class Filled:
    """A migrated database holding JOBS jobs, and the job halfway down the newest-first list."""

    name: str
    engine: Engine
    middle: Job


@dataclass(frozen=True)
class Read:
    """A JobStore read: `get` of the middle job, or `page` (of a status; after the middle job's cursor)."""

    name: str
    page: bool
    status: JobStatus | None = None
    after_middle: bool = False

    def run(self, store: JobStore, middle: Job) -> list[Job]:
        if not self.page:
            job = store.get(middle.id)
            return [] if job is None else [job]
        # encode_cursor is what page() hands out; walking 500 pages down to the middle would add nothing.
        cursor = encode_cursor(middle.created_at, middle.id) if self.after_middle else None
        return store.page(status=self.status, limit=LIMIT, cursor=cursor)[0]

    @property
    def rows(self) -> int:
        """What the read returns: the table is big enough to fill every page."""
        return LIMIT if self.page else 1

    @property
    def share(self) -> float:
        """The share of the jobs the read may return."""
        return 1.0 if self.status is None else STATUSES.count(self.status) / len(STATUSES)

    @property
    def indexes(self) -> tuple[str, ...]:
        """The indexes its scan of `jobs` may use."""
        if not self.page:
            return (_PRIMARY_KEY,)
        if self.status is None:
            return ("ix_jobs_created_at_id",)
        if self.share < _RARE:
            return ("ix_jobs_status_created_at_id",)
        # For a common status PostgreSQL may filter the created_at index instead: its statistics see the
        # statuses interleaved in the heap, so it rates the status index as random reads and prefers
        # reading a few more rows in heap order. row_budget bounds what that choice costs.
        return ("ix_jobs_status_created_at_id", "ix_jobs_created_at_id")

    @property
    def row_budget(self) -> int:
        """Rows any node of a PostgreSQL plan may read: twice a page and its look-ahead row, over the
        share of jobs a filter on the created_at index keeps (where it may use that index). The table
        holds 100,000.
        """
        filtered = len(self.indexes) > 1
        return int(2 * (LIMIT + 1) / (self.share if filtered else 1.0))


READS = [
    Read("get", page=False),
    Read("first page", page=True),
    Read("page after the middle", page=True, after_middle=True),
    *(Read(f"first {s.value} page", page=True, status=s) for s in JobStatus),
    *(Read(f"{s.value} page after the middle", page=True, status=s, after_middle=True) for s in JobStatus),
]


def _cycle(column: str, values: list[str]) -> str:
    """A SQL CASE giving row `column` the values in turn (they are constants of this module)."""
    whens = " ".join(f"WHEN {i} THEN '{value}'" for i, value in enumerate(values))
    return f"CASE {column} % {len(values)} {whens} END"


def _image_shas() -> list[str]:
    return [
        ImageIn.of(f"image {i}".encode(), content_type="image/jpeg", width=1, height=1).sha256
        for i in range(IMAGES)
    ]


# Pairs of jobs share a creation time, so the cursor's tie-break on id is part of what is explained.
_POSTGRES_FILL = """
INSERT INTO jobs (id, status, model, params, image_sha256, detections, attempts, created_at, started_at,
                  finished_at)
SELECT id, status, 'yolov4-tiny', '{{"conf": 0.25, "iou": 0.45}}'::json, image_sha256,
       CASE WHEN status = 'succeeded' THEN '[]'::json END,
       CASE WHEN status IN ('queued', 'cancelled') THEN 0 ELSE 1 END,
       created_at,
       CASE WHEN status IN ('running', 'succeeded', 'failed') THEN created_at + interval '1 second' END,
       CASE WHEN status IN ('succeeded', 'failed', 'cancelled') THEN created_at + interval '2 seconds' END
FROM (SELECT md5(n::text)::uuid::text AS id, {status} AS status, {image} AS image_sha256,
             timestamptz '2025-01-01 00:00:00+00' + (n / 2) * interval '1 second' AS created_at
      FROM generate_series(1, :jobs) AS n) AS numbered
"""

# The times are written as the text SQLAlchemy's SQLite DateTime writes, so the cursor's bound time
# compares with them as it does in a real database.
_SQLITE_FILL = """
WITH RECURSIVE numbers(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < :jobs),
numbered AS (SELECT lower(hex(randomblob(16))) AS h, {status} AS status, {image} AS image_sha256,
                    datetime('2025-01-01 00:00:00', '+' || (n / 2) || ' seconds') AS t
             FROM numbers)
INSERT INTO jobs (id, status, model, params, image_sha256, detections, attempts, created_at, started_at,
                  finished_at)
SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || substr(h, 17, 4)
           || '-' || substr(h, 21),
       status, 'yolov4-tiny', '{{"conf": 0.25, "iou": 0.45}}', image_sha256,
       CASE WHEN status = 'succeeded' THEN '[]' END,
       CASE WHEN status IN ('queued', 'cancelled') THEN 0 ELSE 1 END,
       t || '.000000',
       CASE WHEN status IN ('running', 'succeeded', 'failed') THEN datetime(t, '+1 seconds') || '.000000'
       END,
       CASE WHEN status IN ('succeeded', 'failed', 'cancelled') THEN datetime(t, '+2 seconds') || '.000000'
       END
FROM numbered
"""


def _fill(engine: Engine, *, analyze: bool) -> float:
    """Insert the images and JOBS jobs in one statement; the seconds it took."""
    fill = _POSTGRES_FILL if engine.dialect.name == "postgresql" else _SQLITE_FILL
    created = datetime(2025, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            insert(ImageRow),
            [
                {
                    "sha256": sha,
                    "content_type": "image/jpeg",
                    "width": 1,
                    "height": 1,
                    "size_bytes": 7,
                    "data": b"image",
                    "created_at": created,
                }
                for sha in _image_shas()
            ],
        )
        statuses = [s.value for s in STATUSES]
        conn.execute(
            text(fill.format(status=_cycle("n", statuses), image=_cycle("n", _image_shas()))), {"jobs": JOBS}
        )
        if analyze:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


@pytest.fixture(
    scope="module",
    params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite", "sqlite analyzed"],
)
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """A fresh database of its own (ANALYZE and 100,000 rows must not leak into other modules' tests).

    PostgreSQL is analyzed, as autovacuum would have done after so many inserts. SQLite is checked both
    as visionq leaves it (no statistics: nothing runs ANALYZE) and analyzed, which can change its plans.
    """
    if request.param == "postgres":
        create: Callable[[], str] = request.getfixturevalue("postgres_databases")
        url = create()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('plans') / 'visionq.db'}"
    engine = create_engine_for(url)
    migrate(engine)
    seconds = _fill(engine, analyze=request.param != "sqlite")
    print(f"\n{request.param}: {JOBS:,} jobs inserted in {seconds:.2f} s")  # noqa: T201 -- shown by pytest -s
    with engine.connect() as conn:
        middle_id = conn.execute(
            select(JobRow.id).order_by(JobRow.created_at.desc(), JobRow.id.desc()).offset(JOBS // 2).limit(1)
        ).scalar_one()
    middle = JobStore(engine).get(middle_id)
    assert middle is not None
    yield Filled(request.param, engine, middle)
    engine.dispose()


def test_the_filled_table_holds_the_jobs_the_plans_are_read_on(filled: Filled) -> None:
    with filled.engine.connect() as conn:
        by_status = select(JobRow.status, func.count()).group_by(JobRow.status)
        counts = dict(conn.execute(by_status).all())
        below_middle = conn.execute(
            select(JobRow.id)
            .order_by(JobRow.created_at.desc(), JobRow.id.desc())
            .offset(JOBS // 2 + 1)
            .limit(2)
        ).scalars()
        expected_next = list(below_middle)

    assert counts == {s.value: JOBS * STATUSES.count(s) // len(STATUSES) for s in JobStatus}
    page, cursor = JobStore(filled.engine).page(
        limit=2, cursor=encode_cursor(filled.middle.created_at, filled.middle.id)
    )
    assert [job.id for job in page] == expected_next and cursor is not None


@pytest.mark.parametrize("read", READS, ids=[read.name for read in READS])
def test_each_job_read_stays_on_an_index_and_reads_about_a_page_of_rows(filled: Filled, read: Read) -> None:
    statement, parameters = _statement_of(filled, read)
    dialect = filled.engine.dialect.name
    indexes = {_PRIMARY_KEY_INDEX[dialect] if name == _PRIMARY_KEY else name for name in read.indexes}

    if dialect == "postgresql":
        _check_postgres_plan(filled, statement, parameters, read, indexes)
    else:
        _check_sqlite_plan(filled, statement, parameters, read, indexes)


def _statement_of(filled: Filled, read: Read) -> tuple[str, Any]:
    """The one statement on `jobs` that the read sends to the driver, with its parameters as sent."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FROM jobs" in statement:
            seen.append((statement, parameters))

    event.listen(filled.engine, "before_cursor_execute", record)
    try:
        jobs = read.run(JobStore(filled.engine), filled.middle)
    finally:
        event.remove(filled.engine, "before_cursor_execute", record)
    assert len(jobs) == read.rows
    assert len(seen) == 1, seen
    return seen[0]


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _rows_read(node: dict[str, Any]) -> int:
    """The rows a node produced or looked at and threw away, over all its loops."""
    removed = ("Rows Removed by Filter", "Rows Removed by Join Filter", "Rows Removed by Index Recheck")
    per_loop = node["Actual Rows"] + sum(node.get(key, 0) for key in removed)
    return int(per_loop * node["Actual Loops"])


def _check_postgres_plan(
    filled: Filled, statement: str, parameters: Any, read: Read, indexes: set[str]
) -> None:
    with filled.engine.connect() as conn:
        shown = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) {statement}", parameters
        ).scalars()
        _show(filled, read, list(shown))
        explained = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters
        ).scalar_one()
    plan = explained[0]["Plan"]
    nodes = list(_nodes(plan))
    scans = [node for node in nodes if node.get("Relation Name") == "jobs"]

    assert [node["Node Type"] for node in scans] == ["Index Scan"]  # no Seq Scan, no Bitmap Heap Scan
    assert scans[0]["Index Name"] in indexes
    if read.page:
        assert scans[0]["Scan Direction"] == "Backward"  # newest first, straight off the index
    assert not [node for node in nodes if "Sort" in node["Node Type"]]
    assert plan["Actual Rows"] <= (LIMIT + 1 if read.page else 1)
    assert max(_rows_read(node) for node in nodes) <= read.row_budget


_SQLITE_INDEXED = re.compile(r"(?:SCAN|SEARCH) (\w+) USING (?:COVERING )?INDEX (\w+)(?: \(.*\))?")


def _check_sqlite_plan(
    filled: Filled, statement: str, parameters: Any, read: Read, indexes: set[str]
) -> None:
    raw = filled.engine.raw_connection()
    try:
        db = raw.driver_connection
        assert db is not None
        details = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0  # go on

        db.set_progress_handler(step, 1)
        try:
            db.execute(statement, parameters).fetchall()
        finally:
            db.set_progress_handler(None, 1)
    finally:
        raw.close()
    _show(filled, read, [*details, f"({steps} virtual machine steps)"])

    indexed = [match for detail in details if (match := _SQLITE_INDEXED.fullmatch(detail))]
    assert len(indexed) == len(details), details  # every table through an index; no temp B-tree sort
    jobs_indexes = [match[2] for match in indexed if match[1] == "jobs"]
    assert len(jobs_indexes) == 1 and jobs_indexes[0] in indexes
    assert steps <= _SQLITE_STEP_BUDGET


def _show(filled: Filled, read: Read, plan: list[str]) -> None:
    """Print the plan for `pytest -s`: the README quotes these."""
    print(f"\n--- {filled.name}, {read.name}:\n" + "\n".join(plan))  # noqa: T201
