"""A finished job's webhook: one try (`try_webhook`), the retry schedule, and the lost ones sent again.

The task `visionq.webhook` (tasks.py) runs a try, and on a failure is published again with the delay
`retry_after`: the retry is a message on the broker, so it survives a worker's restart. What each try
got is recorded on the job (`WebhookStore`), the last one as failed. A webhook whose message was lost
all the same (a broker that drops a killed worker's messages, a publish that failed) is sent again by
the reconciler (`resend_overdue`). Delivery is at least once: a receiver may see one twice, with the
same `Visionq-Delivery` (the job id), and should keep the first.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from visionq import constants
from visionq.store import WebhookStatus
from visionq.store.webhooks import WebhookStore
from visionq.views import JobOut
from visionq.webhooks import DeliveryFailed, deliver
from visionq.worker.runtime import Runtime

logger = logging.getLogger(__name__)


def try_webhook(runtime: Runtime, job_id: str) -> float | None:
    """Send job `job_id`'s webhook once, if it is pending; the seconds until the next try when this
    one failed and tries are left, else None (delivered, given up, or nothing to send)."""
    settings = runtime.settings
    job = runtime.store.get(job_id)
    if job is None or job.callback_url is None or not job.status.terminal:
        return None
    if job.webhook_status is not WebhookStatus.PENDING:
        return None  # a second message for a webhook already delivered or given up
    webhooks = WebhookStore(runtime.store.engine)
    about = {"job_id": job_id}
    if settings.webhook_secret is None:
        webhooks.give_up(job_id, error="the worker has no VISIONQ_WEBHOOK_SECRET to sign it with")
        logger.error(
            "job %s: webhook not sent, this worker has no VISIONQ_WEBHOOK_SECRET", job_id, extra=about
        )
        return None
    attempt = job.webhook_attempts + 1
    try:
        status = deliver(
            job.callback_url,
            JobOut.of(job).model_dump_json().encode(),
            secret=settings.webhook_secret.get_secret_value(),
            delivery_id=job.id,
            allow_private=settings.webhook_allow_private,
        )
    except DeliveryFailed as exc:
        if attempt >= settings.webhook_max_attempts:
            webhooks.give_up(job_id, error=exc.reason)
            logger.warning(
                "job %s: webhook failed for good after %d tries: %s", job_id, attempt, exc.reason, extra=about
            )
            return None
        delay = retry_after(attempt, first_s=settings.webhook_retry_s)
        webhooks.retry(job_id, error=exc.reason, after_s=delay)
        logger.info(
            "job %s: webhook try %d failed (%s); next in %.1f s",
            job_id,
            attempt,
            exc.reason,
            delay,
            extra=about,
        )
        return delay
    webhooks.delivered(job_id)
    logger.info("job %s: webhook delivered (HTTP %d, try %d)", job_id, status, attempt, extra=about)
    return None


def retry_after(attempt: int, *, first_s: float) -> float:
    """Seconds before the try after try `attempt` (1, 2, ...): `first_s` doubled each time, at most
    WEBHOOK_RETRY_MAX_S, with up to a quarter of jitter, so receivers that came back are not hit by
    every retry at once."""
    delay = min(first_s * 2 ** (attempt - 1), constants.WEBHOOK_RETRY_MAX_S)
    jittered: float = delay * random.uniform(0.75, 1.0)  # jitter, not a secret
    return jittered


def resend_overdue(runtime: Runtime, publish: Callable[[str], None]) -> int:
    """Publish again the webhooks whose message was lost (their next try long overdue); how many."""
    webhooks = WebhookStore(runtime.store.engine)
    job_ids = webhooks.overdue(late_by_s=constants.WEBHOOK_LOST_AFTER_S, limit=constants.RECONCILE_BATCH)
    for job_id in job_ids:
        publish(job_id)  # a broker error stops here; the rest are overdue again next period
        logger.warning(
            "job %s: its webhook had no message left: published again", job_id, extra={"job_id": job_id}
        )
    return len(job_ids)
