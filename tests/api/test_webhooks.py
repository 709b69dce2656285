"""A submit's callback_url: checked at the edge (a secret to sign with, a public address), shown on the
job, part of what an Idempotency-Key stands for, and a cancelled job's webhook sent at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from tests.api.conftest import EMBEDDED, StackFactory, assert_error, complete, upload
from tests.helpers import wait_until
from tests.webhooks.receiver import Receiver, receiving
from visionq import constants
from visionq.store.tables import JobRow
from visionq.store.webhooks import WebhookStore
from visionq.worker.callbacks import resend_overdue, try_webhook

SECRET = "s3cret-for-the-tests"


def test_a_callback_url_is_refused_when_the_server_has_no_secret_to_sign_with(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    stack = make_stack(EMBEDDED)
    response = upload(stack.client, samples["bus.jpg"], callback_url="https://8.8.8.8/hook")
    error = assert_error(response, 422, "invalid_callback_url")
    assert "VISIONQ_WEBHOOK_SECRET" in error["message"]
    assert stack.store.page(limit=10)[0] == []  # nothing stored


def test_a_callback_url_to_the_servers_own_network_is_refused_unless_allowed(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    closed = make_stack(EMBEDDED, webhook_secret=SECRET)
    for url in ("http://127.0.0.1:5432/", "http://localhost/hook", "http://169.254.169.254/"):
        assert_error(upload(closed.client, samples["bus.jpg"], callback_url=url), 422, "invalid_callback_url")
    assert_error(
        upload(closed.client, samples["bus.jpg"], callback_url="ftp://x/"), 422, "invalid_callback_url"
    )

    opened = make_stack(EMBEDDED, webhook_secret=SECRET, webhook_allow_private=True)
    response = upload(opened.client, samples["bus.jpg"], callback_url="http://127.0.0.1:9/hook")
    assert response.status_code == 202, response.text
    assert response.json()["webhook"] == {
        "url": "http://127.0.0.1:9/hook",
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "last_attempt_at": None,
    }


def test_a_job_without_a_callback_shows_no_webhook(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    stack = make_stack(EMBEDDED, webhook_secret=SECRET)
    assert upload(stack.client, samples["bus.jpg"]).json()["webhook"] is None


def test_an_idempotency_key_stands_for_its_callback_url_too(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    stack = make_stack(EMBEDDED, webhook_secret=SECRET, webhook_allow_private=True)

    def submit(url: str) -> object:
        return stack.client.post(
            "/v1/jobs",
            files={"image": ("bus.jpg", samples["bus.jpg"], "image/jpeg")},
            data={"callback_url": url},
            headers={"Idempotency-Key": "one"},
        )

    first = submit("http://127.0.0.1:9/a")
    assert first.status_code == 202  # type: ignore[attr-defined]
    assert submit("http://127.0.0.1:9/a").headers["Idempotent-Replayed"] == "true"  # type: ignore[attr-defined]
    assert_error(submit("http://127.0.0.1:9/b"), 409, "idempotency_key_reused")  # type: ignore[arg-type]


def test_a_cancelled_jobs_webhook_is_published_and_delivered_with_the_cancelled_job(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    receiver = Receiver()
    with receiving(receiver) as base:
        stack = make_stack(EMBEDDED, webhook_secret=SECRET, webhook_allow_private=True)
        job_id = upload(stack.client, samples["bus.jpg"], callback_url=f"{base}/hook").json()["id"]
        assert stack.client.delete(f"/v1/jobs/{job_id}").status_code == 200
        # The message the API published, taken off the embedded broker's webhooks queue as a worker would.
        with stack.celery.connection_for_read() as conn:
            queue = conn.SimpleQueue("visionq.webhooks")
            message = queue.get(timeout=10)
            assert message.payload == [
                [job_id],
                {},
                {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
            ]
            message.ack()
            queue.close()
        assert try_webhook(stack.runtime, job_id) is None
    [got] = receiver.received
    assert b'"status":"cancelled"' in got.body
    job = stack.store.get(job_id)
    assert job is not None and job.webhook_status is not None
    assert (job.webhook_status.value, job.webhook_attempts, job.webhook_error) == ("delivered", 1, None)
    # Delivered: a second message for it sends nothing.
    assert try_webhook(stack.runtime, job_id) is None
    assert receiver.count() == 1
    assert wait_until(
        lambda: WebhookStore(stack.engine).overdue(late_by_s=0, limit=10) == [],
        timeout_s=1,
        what="none overdue",
    )


def test_a_webhook_whose_message_was_lost_is_found_overdue_and_published_again_once_per_period(
    make_stack: StackFactory, samples: dict[str, bytes]
) -> None:
    stack = make_stack(EMBEDDED, webhook_secret=SECRET, webhook_allow_private=True)
    job_id = upload(stack.client, samples["bus.jpg"], callback_url="http://127.0.0.1:9/hook").json()["id"]
    other = upload(stack.client, samples["zidane.jpg"]).json()["id"]  # no callback: never a webhook
    for finished in (job_id, other):
        complete(stack, finished)
    published: list[str] = []
    assert resend_overdue(stack.runtime, published.append) == 0  # just finished: its message is on its way

    long_ago = datetime.now(UTC) - timedelta(seconds=constants.WEBHOOK_LOST_AFTER_S + 60)
    with stack.engine.begin() as conn:
        conn.execute(update(JobRow).values(finished_at=long_ago))
    assert resend_overdue(stack.runtime, published.append) == 1
    assert published == [job_id]
    assert resend_overdue(stack.runtime, published.append) == 0  # due again only a period later
