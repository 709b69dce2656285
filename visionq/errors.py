"""Every error visionq raises on purpose: one shallow tree, translated to HTTP only at the API edge.

Each error carries an `ErrorCode`, the stable machine-readable name clients and job rows see; the API's
one mapping (`visionq.api.errors.STATUS`) gives each code its HTTP status.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code an error response or a failed job can carry."""

    # The image: refused at submit, or the job fails with it.
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_LARGE = "too_large"
    CORRUPT = "corrupt"
    # The request.
    BAD_REQUEST = "bad_request"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_CLASS = "unknown_class"
    UNKNOWN_MODEL = "unknown_model"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    INVALID_CALLBACK_URL = "invalid_callback_url"
    # Who may ask, and how much.
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_QUEUED = "too_many_queued"
    # The model.
    MODEL_ERROR = "model_error"
    MODEL_NOT_FOUND = "model_not_found"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    # A server visionq depends on.
    SERVICE_UNAVAILABLE = "service_unavailable"
    BROKER_UNAVAILABLE = "broker_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    SOURCE_UNAVAILABLE = "source_unavailable"
    QUEUE_FULL = "queue_full"
    # Only on failed jobs: what went wrong while a worker ran it.
    IMAGE_MISSING = "image_missing"
    TIMEOUT = "timeout"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    # A bug or a broken installation.
    INTERNAL_ERROR = "internal_error"


# The codes a worker records on a failed job and no request is ever answered with.
JOB_ONLY_CODES = frozenset({ErrorCode.IMAGE_MISSING, ErrorCode.TIMEOUT, ErrorCode.TOO_MANY_ATTEMPTS})


class VisionqError(Exception):
    """Base class of visionq's own errors."""

    code = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidImage(VisionqError):
    """The bytes are not an image visionq can read: empty, corrupt, truncated, too big or unsupported."""

    code = ErrorCode.CORRUPT


class InvalidRequest(VisionqError):
    """A parameter is out of range or names something unknown (a class, a model)."""

    code = ErrorCode.INVALID_REQUEST


class ModelError(VisionqError):
    """A model cannot be verified, converted or loaded."""

    code = ErrorCode.MODEL_ERROR


class ModelNotFound(ModelError):
    """The named model is not in the model cache, and visionq knows no source for it."""

    code = ErrorCode.MODEL_NOT_FOUND


class ChecksumMismatch(ModelError):
    """A downloaded file does not have the sha256 it must have."""

    code = ErrorCode.CHECKSUM_MISMATCH


class JobFailed(VisionqError):
    """A job cannot run to a result for a reason of its own (its image is gone, it ran out of time...)."""


class ServiceUnavailable(VisionqError):
    """A server visionq depends on cannot be reached now; retrying later may work (transient)."""

    code = ErrorCode.SERVICE_UNAVAILABLE


class BrokerUnavailable(ServiceUnavailable):
    """The broker is unreachable or did not confirm a message."""

    code = ErrorCode.BROKER_UNAVAILABLE


class DatabaseUnavailable(ServiceUnavailable):
    """The job database is unreachable, restarting, or has no connection free."""

    code = ErrorCode.DATABASE_UNAVAILABLE


class SourceUnavailable(ServiceUnavailable):
    """The package index a model comes from cannot be reached."""

    code = ErrorCode.SOURCE_UNAVAILABLE


class QueueFull(ServiceUnavailable):
    """As many jobs are queued as the service takes (VISIONQ_MAX_QUEUED_JOBS): submit again later."""

    code = ErrorCode.QUEUE_FULL


class Unauthorized(VisionqError):
    """The request carries no valid API key, and the API asks for one."""

    code = ErrorCode.UNAUTHORIZED


class Throttled(VisionqError):
    """A client asked more, or has more queued, than its limit allows; it may ask again later."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: int, code: ErrorCode | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class NotFound(VisionqError):
    """The job (or its image) does not exist."""

    code = ErrorCode.NOT_FOUND


class Conflict(VisionqError):
    """The job is in a state that does not allow the operation (e.g. deleting a running job)."""

    code = ErrorCode.CONFLICT
