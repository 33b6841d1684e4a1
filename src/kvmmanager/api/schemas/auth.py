"""Schemas of the auth, users and tokens routers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from kvmmanager.api.schemas.common import OrmModel

Role = Literal["admin", "operator", "viewer"]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    username: str
    role: str
    csrf_token: str
    expires_at: datetime
    password_change_required: bool = Field(
        False,
        description="the password was generated (first admin): until it is changed "
        "(POST /api/auth/password) every other call answers 403 password_change_required",
    )


class Me(BaseModel):
    username: str
    role: str
    via: str
    csrf_token: str | None = None


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class UserOut(OrmModel):
    username: str
    role: str
    disabled: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: Role = "viewer"


class UserUpdate(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=1, max_length=1024)


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    expires_at: datetime | None = None
    # Admins may create a token for another user.
    username: str | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    username: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret. Shown only now; store it.")
