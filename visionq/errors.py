"""Every error visionq raises on purpose: one shallow tree, translated to HTTP only at the API edge."""

from __future__ import annotations


class VisionqError(Exception):
    """Base class of visionq's own errors; `code` is stable and machine-readable."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidImage(VisionqError):
    """The bytes are not an image visionq can read: empty, corrupt, truncated, too big or unsupported."""

    code = "invalid_image"


class InvalidRequest(VisionqError):
    """A parameter is out of range or names something unknown (a class, a model)."""

    code = "invalid_request"


class ModelError(VisionqError):
    """A model cannot be fetched, verified, converted or loaded."""

    code = "model_error"


class ModelNotFound(ModelError):
    """The named model is not in the model cache."""

    code = "model_not_found"


class ChecksumMismatch(ModelError):
    """A downloaded file does not have the sha256 it must have."""

    code = "checksum_mismatch"


class SourceUnavailable(ModelError):
    """The package index holding a model cannot be reached."""

    code = "source_unavailable"


class ServiceUnavailable(VisionqError):
    """A server visionq depends on (broker, database) cannot be reached now; retrying later may work."""

    code = "service_unavailable"


class BrokerUnavailable(ServiceUnavailable):
    """The broker is unreachable or did not confirm a message."""

    code = "broker_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The job database is unreachable."""

    code = "database_unavailable"


class NotFound(VisionqError):
    """The job (or its image) does not exist."""

    code = "not_found"


class Conflict(VisionqError):
    """The job is in a state that does not allow the operation (e.g. deleting a running job)."""

    code = "conflict"
