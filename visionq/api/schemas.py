"""What the API answers besides a job (visionq.views): pages of jobs, models, health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from visionq.detect.manifest import Family, Manifest, Preprocess
from visionq.views import JobOut


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class InputOut(BaseModel):
    width: int
    height: int
    preprocess: Preprocess


class ModelOut(BaseModel):
    name: str
    family: Family
    input: InputOut
    classes: list[str]
    source: str
    license: str | None

    @classmethod
    def of(cls, manifest: Manifest) -> ModelOut:
        spec = manifest.input
        return cls(
            name=manifest.name,
            family=manifest.family,
            input=InputOut(width=spec.width, height=spec.height, preprocess=spec.preprocess),
            classes=list(manifest.classes),
            source=manifest.source,
            license=manifest.license,
        )


class ModelList(BaseModel):
    models: list[ModelOut]
    default: str = Field(description="The model a job runs with when it names none.")


class StatusOut(BaseModel):
    status: Literal["ok"] = "ok"
