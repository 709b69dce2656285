"""A client of visionq's HTTP API: `VisionqClient`, and the batch runner behind `visionq submit`.

It talks to the API over HTTP only, so it imports nothing of the server (api, worker, store).
"""

from visionq.client.client import ApiError, Submitted, VisionqClient

__all__ = ["ApiError", "Submitted", "VisionqClient"]
