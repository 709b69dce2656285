"""The one settings class: every knob visionq reads from the environment (prefix VISIONQ_) or `.env`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from visionq import constants


class Settings(BaseSettings):
    """visionq's configuration; build it once (`Settings()`) and pass it on."""

    model_config = SettingsConfigDict(env_prefix="VISIONQ_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path(".visionq"), description="Model cache, embedded database and broker.")
    model: str = Field(default=constants.DEFAULT_MODEL, description="Model used when a request names none.")
    threads: int | None = Field(
        default=None, ge=1, description="ONNX Runtime intra-op threads; unset means the CPU count."
    )
    max_image_pixels: int = Field(default=constants.MAX_IMAGE_PIXELS, ge=1)
    max_image_bytes: int = Field(default=constants.MAX_IMAGE_BYTES, ge=1)

    @property
    def models_dir(self) -> Path:
        """Where pulled and imported models live."""
        return self.data_dir / "models"
