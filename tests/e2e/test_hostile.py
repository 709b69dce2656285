"""Hostile input against a running API (uvicorn, RabbitMQ, PostgreSQL, a worker): schemathesis'
requests from the OpenAPI schema, valid and schema-violating, then a corpus of damaged images, lying
headers, bombs, floods and bad parameters (tests/e2e/hostile.py). No answer may be a 5xx, each probe
gets a 4xx it deserves, the API's memory stays bounded, and the worker survives every accepted job."""

from __future__ import annotations

import http.client
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from tests.e2e.hostile import IMAGE_CODES, Probe, corpus
from tests.e2e.stack import Service, running_service, wait_finished
from visionq.models.cache import ModelCache

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq, pytest.mark.postgres]

# Generated requests per operation and mode, at most: Hypothesis stops sooner where an operation has
# few distinct requests to make (GET /healthz has one); the run checks that over 1,000 were sent.
EXAMPLES = 150


@pytest.fixture(params=["rabbitmq-postgres"])
def service(request: pytest.FixtureRequest, tmp_path: Path, model_cache: ModelCache) -> Iterator[Service]:
    with running_service(request, tmp_path, model_cache) as running:
        yield running


class Memory:
    """The API process's resident memory, sampled as the run goes."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.curve: list[tuple[int, float]] = []

    def sample(self, requests_sent: int) -> None:
        self.curve.append((requests_sent, self.process.memory_info().rss / 2**20))


def _generated(base: str, memory: Memory, statuses: Counter[int], server_errors: list[str]) -> int:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    session = requests.Session()
    sent = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the API's own schema does not load: {result}"
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
            )
            def send(case: schemathesis.Case[Any]) -> None:
                nonlocal sent
                response = case.call(base_url=base, session=session, timeout=30)
                sent += 1
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{case.method} {case.formatted_path}: {response.text[:300]}")
                if sent % 100 == 0:
                    memory.sample(sent)

            try:
                send()
            except Unsatisfiable:
                # An operation with nothing to violate (GET /healthz takes no parameters) has no
                # negative requests: its positive ones are all there is.
                assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def _send(client: httpx.Client, probe: Probe) -> tuple[int, Any]:
    """The probe's status and JSON body."""
    if probe.declared_length is None:
        response = client.request(probe.method, probe.path, timeout=60, **probe.kwargs)
        return response.status_code, response.json()
    connection = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=60)
    try:
        connection.putrequest(probe.method, probe.path)
        for name, value in {**probe.kwargs["headers"], "content-length": str(probe.declared_length)}.items():
            connection.putheader(name, value)
        connection.endheaders(probe.kwargs["content"])
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_a_thousand_hostile_requests_get_no_5xx_and_the_right_4xx(
    service: Service, samples: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    client = service.client
    base = str(client.base_url).rstrip("/")
    memory = Memory(service.procs.pid("api"))
    memory.sample(0)
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []

    generated = _generated(base, memory, statuses, server_errors)

    wrong: list[str] = []
    accepted: list[str] = []
    probes = corpus(samples["zidane.jpg"])
    for probe in probes:
        try:
            status, body = _send(client, probe)
        except (httpx.HTTPError, OSError) as exc:
            wrong.append(f"{probe.name}: no answer ({exc!r})")
            continue
        statuses[status] += 1
        code = body["error"]["code"] if status >= 400 else None
        if status >= 500:
            server_errors.append(f"{probe.name}: {body}")
        if status not in probe.statuses or (code and probe.codes and code not in probe.codes):
            wrong.append(f"{probe.name}: {status} {code}, expected {sorted(probe.statuses)}")
        if status == 202:
            accepted.append(body["id"])
    memory.sample(generated + len(probes))

    # Every job the corpus got accepted ends: succeeded, or failed with an image's code.
    endings: Counter[str] = Counter()
    for job_id in accepted:
        job = wait_finished(client, job_id, timeout=120)
        error = job.get("error")
        ending = str(job["status"]) if not isinstance(error, dict) else f"failed {error['code']}"
        endings[ending] += 1
        if job["status"] != "succeeded" and not (isinstance(error, dict) and error["code"] in IMAGE_CODES):
            wrong.append(f"job {job_id}: {ending}")
    worker = service.procs.proc("worker")
    assert worker.poll() is None, service.procs.output("worker")[-3000:]

    with capsys.disabled():
        sys.stdout.write(
            f"\n## Hostile input: {generated} generated + {len(probes)} corpus requests\n"
            f"statuses        {dict(sorted(statuses.items()))}\n"
            f"accepted jobs   {dict(endings)}\n"
            f"API RSS (MiB)   {', '.join(f'{n}: {rss:.0f}' for n, rss in memory.curve)}\n"
        )
    assert server_errors == []
    assert wrong == [], "\n".join(wrong)
    assert generated >= 1000
    warm, final = memory.curve[1][1], memory.curve[-1][1]
    assert final - warm < 64, memory.curve  # bounded: no growth with the requests once warm
