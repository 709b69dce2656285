"""/v1/models: the models in the cache, with the classes a job may filter on."""

from __future__ import annotations

from fastapi import APIRouter

from visionq.api.deps import ModelsDep, SettingsDep
from visionq.api.schemas import ModelList, ModelOut

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(models: ModelsDep, settings: SettingsDep) -> ModelList:
    """Every model a job can name (a plain `def`: reading the manifests is file I/O)."""
    return ModelList(models=[ModelOut.of(m) for m in models.list()], default=settings.model)
