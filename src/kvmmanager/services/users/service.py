"""Local users, login sessions and API tokens. Plain Python over the database."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from kvmmanager.core import password_policy, security
from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from kvmmanager.core.password_policy import password_problem
from kvmmanager.db.models import ROLES, ApiToken, User
from kvmmanager.db.models import Session as LoginSession

log = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOKEN_NAME_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
MIN_PASSWORD_LENGTH = password_policy.MIN_LENGTH
MAX_PASSWORD_LENGTH = password_policy.MAX_LENGTH
BOOTSTRAP_ADMIN = "admin"
ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a login costs the same either way.
    Made on first use (not at import) with the parameters in use then."""
    return security.hash_password(security.generate_password())


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a snapshot of the user, safe to pass across threads."""

    id: int
    username: str
    role: str
    via: str  # "session" | "token" | "local"
    csrf_token: str | None = None
    # Logged in with a password that must be changed first (users.must_change_password).
    must_change_password: bool = False

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _now() -> datetime:
    return datetime.now(UTC)


def validate_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise InvalidInput(
            "username must be 1-64 characters: letters, digits, '_', '.', '@', '-', "
            "starting with a letter or digit",
            field="username",
        )
    return username


def validate_password(
    password: str, field: str = "password", *, username: str | None = None
) -> str:
    """The one password policy (core/password_policy.py) for every way a password is set:
    user creation and password changes, through the API, the web UI and the CLI."""
    if not isinstance(password, str):
        raise InvalidInput("password must be text", field=field)
    problem = password_problem(password, username=username)
    if problem is not None:
        raise InvalidInput(problem, field=field)
    return password


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


class UserService:
    def __init__(self, db: sessionmaker[DbSession], settings: Settings) -> None:
        self._db = db
        self._settings = settings

    # -- users -------------------------------------------------------------------------

    def create(self, username: str, password: str, role: str = "viewer") -> User:
        validate_username(username)
        validate_password(password, username=username)
        validate_role(role)
        with self._db.begin() as s:
            if s.scalar(select(User.id).where(User.username == username)) is not None:
                raise Conflict(f"user {username!r} already exists", field="username")
            user = User(
                username=username, password_hash=security.hash_password(password), role=role
            )
            s.add(user)
        return user

    def get(self, username: str) -> User:
        with self._db() as s:
            user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no user {username!r}", field="username")
        return user

    def list(self) -> list[User]:
        with self._db() as s:
            return list(s.scalars(select(User).order_by(User.username)))

    def count(self) -> int:
        with self._db() as s:
            return s.scalar(select(func.count(User.id))) or 0

    def set_password(self, username: str, password: str) -> None:
        validate_password(password, username=username)
        with self._db.begin() as s:
            user = self._load(s, username)
            if user.must_change_password and security.verify_password(user.password_hash, password):
                raise InvalidInput("choose a new password, not the current one", field="password")
            one_time = user.must_change_password and self._holds_password_of(user)
            user.password_hash = security.hash_password(password)
            user.must_change_password = False
            # A new password ends every existing login of that user.
            s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
        if one_time:
            # The file's password no longer works: left in place, every restart pointed the
            # admin at it ("the first admin password is in …") and the login then failed.
            self.initial_password_file().unlink(missing_ok=True)

    def update(
        self, username: str, *, role: str | None = None, disabled: bool | None = None
    ) -> User:
        with self._db.begin() as s:
            user = self._load(s, username)
            if role is not None:
                validate_role(role)
                if user.role == "admin" and role != "admin":
                    self._keep_an_admin(s, user)
                user.role = role
            if disabled is not None:
                if disabled and user.role == "admin":
                    self._keep_an_admin(s, user)
                user.disabled = disabled
                if disabled:
                    s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
        return user

    def delete(self, username: str) -> None:
        with self._db.begin() as s:
            user = self._load(s, username)
            if user.role == "admin":
                self._keep_an_admin(s, user)
            s.delete(user)

    def authenticate(self, username: str, password: str) -> Principal:
        with self._db() as s:
            user = s.scalar(select(User).where(User.username == username))
        if user is None:
            security.verify_password(_dummy_hash(), password)
            raise Unauthenticated("invalid username or password")
        if not security.verify_password(user.password_hash, password) or user.disabled:
            raise Unauthenticated("invalid username or password")
        if security.password_needs_rehash(user.password_hash):
            with self._db.begin() as s:
                row = s.get(User, user.id)
                if row is not None:
                    row.password_hash = security.hash_password(password)
        return Principal(
            user.id,
            user.username,
            user.role,
            via="local",
            must_change_password=user.must_change_password,
        )

    # -- first start -------------------------------------------------------------------

    def initial_password_file(self) -> Path:
        configured = self._settings.auth.initial_password_file
        return (
            Path(configured) if configured else self._settings.data_dir / ("initial-admin-password")
        )

    def bootstrap_admin(self) -> str | None:
        """On a database without users, create `admin` with a random password.

        The password goes only to a 0600 file (stdout is the journal under systemd: only
        the file's path is printed), and a login with it may do nothing but change it.
        There is no default password. Returns it, or None when users already exist.
        """
        if self.count() > 0:
            return None
        password = security.generate_password()
        self.create(BOOTSTRAP_ADMIN, password, "admin")
        with self._db.begin() as s:
            self._load(s, BOOTSTRAP_ADMIN).must_change_password = True
        path = self._write_secret_file(password)
        print(
            f"kvm-manager: created user 'admin'; its password is in {path} (readable by this "
            "user only) and must be changed at the first login",
            file=sys.stdout,
            flush=True,
        )
        return password

    def reset_admin(self, username: str = BOOTSTRAP_ADMIN) -> str:
        """Give `username` (created as admin when missing) a new random password."""
        password = security.generate_password()
        with self._db.begin() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                s.add(
                    User(
                        username=validate_username(username),
                        password_hash=security.hash_password(password),
                        role="admin",
                        must_change_password=True,
                    )
                )
            else:
                user.password_hash = security.hash_password(password)
                user.role = "admin"
                user.disabled = False
                user.must_change_password = True
                s.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
        self._write_secret_file(password)
        return password

    def _holds_password_of(self, user: User) -> bool:
        """Whether the first-start/reset file holds `user`'s current (one-time) password."""
        try:
            with self.initial_password_file().open() as f:
                written = f.read(256).strip()
        except OSError:
            return False
        return bool(written) and security.verify_password(user.password_hash, written)

    def _write_secret_file(self, password: str) -> Path:
        path = self.initial_password_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Create with 0600 from the start: never a moment where others can read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(path, 0o600)
        return path

    # -- sessions ----------------------------------------------------------------------

    def create_session(self, principal: Principal) -> tuple[str, str, datetime]:
        """Returns (cookie value, csrf token, expiry). Only the cookie's hash is stored."""
        session_id = security.generate_session_id()
        csrf = security.generate_csrf_token()
        expires = _now() + timedelta(hours=self._settings.auth.session_hours)
        with self._db.begin() as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at < _now()))
            s.add(
                LoginSession(
                    id_hash=security.hash_token(session_id),
                    user_id=principal.id,
                    csrf_token=csrf,
                    expires_at=expires,
                )
            )
        return session_id, csrf, expires

    def principal_for_session(self, session_id: str) -> Principal:
        with self._db() as s:
            row = s.execute(
                select(LoginSession, User)
                .join(User, User.id == LoginSession.user_id)
                .where(LoginSession.id_hash == security.hash_token(session_id))
            ).first()
        if row is None:
            raise Unauthenticated("session expired or invalid; log in again")
        sess, user = row
        if sess.expires_at < _now() or user.disabled:
            raise Unauthenticated("session expired or invalid; log in again")
        return Principal(
            user.id,
            user.username,
            user.role,
            "session",
            sess.csrf_token,
            must_change_password=user.must_change_password,
        )

    def end_session(self, session_id: str) -> None:
        with self._db.begin() as s:
            s.execute(
                delete(LoginSession).where(LoginSession.id_hash == security.hash_token(session_id))
            )

    # -- API tokens --------------------------------------------------------------------

    def create_token(
        self, username: str, name: str, expires_at: datetime | None = None
    ) -> tuple[ApiToken, str]:
        """Returns the row and the secret. The secret is shown once and never stored."""
        if not isinstance(name, str) or not TOKEN_NAME_RE.match(name):
            raise InvalidInput(
                "token name must be 1-64 characters without control characters", field="name"
            )
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            if expires_at <= _now():
                raise InvalidInput("expires_at must be in the future", field="expires_at")
        secret = security.generate_token()
        with self._db.begin() as s:
            user = self._load(s, username)
            token = ApiToken(
                user_id=user.id,
                name=name,
                token_hash=security.hash_token(secret),
                prefix=security.token_display_prefix(secret),
                expires_at=expires_at,
            )
            s.add(token)
        return token, secret

    def list_tokens(self, username: str | None = None) -> list[tuple[ApiToken, str]]:
        """(token, owner username) pairs; all users' tokens when username is None."""
        q = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
        if username is not None:
            q = q.where(User.username == username)
        with self._db() as s:
            return [(t, u) for t, u in s.execute(q.order_by(ApiToken.id))]

    def get_token(self, token_id: int) -> tuple[ApiToken, str]:
        with self._db() as s:
            row = s.execute(
                select(ApiToken, User.username)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.id == token_id)
            ).first()
        if row is None:
            raise NotFound(f"no token {token_id}", field="token_id")
        return row[0], row[1]

    def revoke_token(self, token_id: int) -> ApiToken:
        with self._db.begin() as s:
            token = s.get(ApiToken, token_id)
            if token is None:
                raise NotFound(f"no token {token_id}", field="token_id")
            if token.revoked_at is None:
                token.revoked_at = _now()
        return token

    def principal_for_token(self, secret: str) -> Principal:
        now = _now()
        with self._db() as s:
            row = s.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == security.hash_token(secret))
            ).first()
            if row is None:
                raise Unauthenticated("invalid API token")
            token, user = row
            if token.revoked_at is not None:
                raise Unauthenticated("API token revoked")
            if token.expires_at is not None and token.expires_at <= now:
                raise Unauthenticated("API token expired")
            if user.disabled:
                raise Unauthenticated("user disabled")
            principal = Principal(user.id, user.username, user.role, via="token")
        # Minute granularity is plenty and spares a write on every request. Best effort:
        # a database locked by someone else must not turn every read into an error.
        if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
            try:
                with self._db.begin() as s:
                    s.execute(
                        update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now)
                    )
            except OperationalError as exc:
                log.info("token last-use time not recorded: %s", exc.orig)
        return principal

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _load(s: DbSession, username: str) -> User:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no user {username!r}", field="username")
        return user

    @staticmethod
    def _keep_an_admin(s: DbSession, user: User) -> None:
        others = s.scalar(
            select(func.count(User.id)).where(
                User.role == "admin", User.id != user.id, User.disabled.is_(False)
            )
        )
        if not others:
            raise Conflict("refusing to remove the last enabled admin", field="username")
