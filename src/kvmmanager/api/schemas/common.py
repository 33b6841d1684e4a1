"""Schemas shared by every router: the error shape and paginated lists."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class JobStarted(BaseModel):
    """What a route answers (202) when it started a job."""

    job_id: str


class OrmModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Document the error shape on every route (`APIRouter(responses=ERROR_RESPONSES)`). 400 is
# a body that is not parseable at all (invalid UTF-8/JSON), answered before validation.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 422, 503)
}
