"""API tokens: everyone manages their own; an admin sees and revokes everyone's."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response, status

from kvmmanager.api.deps import CurrentUser, ManagerDep, no_content, self_service
from kvmmanager.api.schemas.auth import TokenCreate, TokenCreated, TokenOut
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.core.errors import NotFound, PermissionDenied
from kvmmanager.db.models import ApiToken

router = APIRouter(prefix="/api/tokens", tags=["tokens"], responses=ERROR_RESPONSES)


def _out(token: ApiToken, username: str) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        username=username,
        prefix=token.prefix,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


@router.get("", name="tokens.list", response_model=list[TokenOut])
def list_tokens(
    *,
    all_users: bool = Query(False, alias="all", description="Every user's tokens (admin)."),
    user: CurrentUser,
    manager: ManagerDep,
) -> list[TokenOut]:
    if all_users and not user.has_role("admin"):
        raise PermissionDenied("only an admin may list every user's tokens", field="all")
    owner = None if all_users else user.username
    return [_out(t, u) for t, u in manager.users.list_tokens(owner)]


@router.post(
    "", name="tokens.create", response_model=TokenCreated, status_code=status.HTTP_201_CREATED
)
@self_service
def create_token(
    body: TokenCreate,
    response: Response,
    user: CurrentUser,
    manager: ManagerDep,
) -> TokenCreated:
    response.headers["Cache-Control"] = "no-store"  # the secret, shown once
    owner = body.username or user.username
    if owner != user.username and not user.has_role("admin"):
        raise PermissionDenied("only an admin may create tokens for others", field="username")
    token, secret = manager.users.create_token(owner, body.name, body.expires_at)
    return TokenCreated(**_out(token, owner).model_dump(), token=secret)


@router.delete("/{token_id}", name="tokens.revoke", status_code=status.HTTP_204_NO_CONTENT)
@self_service
def revoke_token(
    token_id: int,
    user: CurrentUser,
    manager: ManagerDep,
) -> Response:
    _token, owner = manager.users.get_token(token_id)
    if owner != user.username and not user.has_role("admin"):
        # Same answer as a missing token: do not reveal other users' token ids.
        raise NotFound(f"no token {token_id}", field="token_id")
    manager.users.revoke_token(token_id)
    return no_content()
