"""Users (admin only): list, create, show, update (role, disabled, password), delete."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from kvmmanager.api.deps import ADMIN_ONLY, ManagerDep, no_content
from kvmmanager.api.schemas.auth import UserCreate, UserOut, UserUpdate
from kvmmanager.api.schemas.common import ERROR_RESPONSES

router = APIRouter(
    prefix="/api/users",
    tags=["users"],
    responses=ERROR_RESPONSES,
    dependencies=ADMIN_ONLY,
)


@router.get("", name="users.list", response_model=list[UserOut])
def list_users(manager: ManagerDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in manager.users.list()]


@router.post("", name="users.create", response_model=UserOut, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, manager: ManagerDep) -> UserOut:
    return UserOut.model_validate(manager.users.create(body.username, body.password, body.role))


@router.get("/{username}", name="users.get", response_model=UserOut)
def get_user(username: str, manager: ManagerDep) -> UserOut:
    return UserOut.model_validate(manager.users.get(username))


@router.patch("/{username}", name="users.update", response_model=UserOut)
def update_user(username: str, body: UserUpdate, manager: ManagerDep) -> UserOut:
    if body.password is not None:
        manager.users.set_password(username, body.password)
    user = manager.users.update(username, role=body.role, disabled=body.disabled)
    return UserOut.model_validate(user)


@router.delete("/{username}", name="users.delete", status_code=status.HTTP_204_NO_CONTENT)
def delete_user(username: str, manager: ManagerDep) -> Response:
    manager.users.delete(username)
    return no_content()
