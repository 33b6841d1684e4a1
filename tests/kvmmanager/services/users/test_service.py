from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated


def test_bootstrap_creates_admin_once_with_random_password(
    db_manager: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = db_manager.users.initial_password_file()
    password = path.read_text().strip()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(password) >= 16
    assert db_manager.initial_admin_password == password
    principal = db_manager.users.authenticate("admin", password)
    assert principal.role == "admin"
    # A second start with users present creates nothing and prints nothing.
    capsys.readouterr()
    assert db_manager.users.bootstrap_admin() is None
    assert capsys.readouterr().out == ""
    assert [u.username for u in db_manager.users.list()] == ["admin"]


def test_bootstrap_prints_only_the_password_file(
    settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout is the journal under systemd: the password goes only to the 0600 file."""
    from kvmmanager.services.manager import Manager

    m = Manager(settings)
    m.prepare_database()
    out = capsys.readouterr().out
    assert m.initial_admin_password not in out
    assert str(m.users.initial_password_file()) in out
    assert m.users.get("admin").must_change_password
    m.engine.dispose()


def test_create_validate_and_authenticate(db_manager: Any) -> None:
    users = db_manager.users
    users.create("kvmm-t-plat-op", "s3cret-pass", "operator")
    assert users.authenticate("kvmm-t-plat-op", "s3cret-pass").role == "operator"
    with pytest.raises(Unauthenticated):
        users.authenticate("kvmm-t-plat-op", "wrong-pass")
    with pytest.raises(Unauthenticated):
        users.authenticate("nobody", "whatever")
    with pytest.raises(Conflict) as e:
        users.create("kvmm-t-plat-op", "another-pass", "viewer")
    assert e.value.field == "username"
    for bad in ("", "a/b", "x" * 65, "tab\tname", "-lead"):
        with pytest.raises(InvalidInput) as e:
            users.create(bad, "long-enough", "viewer")
        assert e.value.field == "username"
    with pytest.raises(InvalidInput) as e:
        users.create("kvmm-t-plat-short", "short", "viewer")
    assert e.value.field == "password"
    with pytest.raises(InvalidInput) as e:
        users.create("kvmm-t-plat-role", "long-enough", "root")
    assert e.value.field == "role"


def test_disable_password_change_and_delete(db_manager: Any) -> None:
    users = db_manager.users
    users.create("kvmm-t-plat-v", "first-pass", "viewer")
    p = users.authenticate("kvmm-t-plat-v", "first-pass")
    sid, _csrf, _exp = users.create_session(p)
    assert users.principal_for_session(sid).username == "kvmm-t-plat-v"
    users.set_password("kvmm-t-plat-v", "second-pass")
    with pytest.raises(Unauthenticated):
        users.principal_for_session(sid)  # a new password ends old sessions
    users.update("kvmm-t-plat-v", disabled=True)
    with pytest.raises(Unauthenticated):
        users.authenticate("kvmm-t-plat-v", "second-pass")
    users.delete("kvmm-t-plat-v")
    with pytest.raises(NotFound):
        users.get("kvmm-t-plat-v")


def test_last_admin_is_protected(db_manager: Any) -> None:
    users = db_manager.users
    with pytest.raises(Conflict):
        users.delete("admin")
    with pytest.raises(Conflict):
        users.update("admin", role="viewer")
    with pytest.raises(Conflict):
        users.update("admin", disabled=True)
    users.create("kvmm-t-plat-admin2", "long-enough", "admin")
    users.delete("admin")
    assert [u.username for u in users.list()] == ["kvmm-t-plat-admin2"]


def test_tokens_lifecycle(db_manager: Any) -> None:
    users = db_manager.users
    token, secret = users.create_token("admin", "kvmm-t-plat-tok")
    assert secret.startswith(token.prefix)
    assert secret not in (token.token_hash,)
    p = users.principal_for_token(secret)
    assert (p.username, p.via) == ("admin", "token")
    assert users.get_token(token.id)[0].last_used_at is not None
    listed = users.list_tokens("admin")
    assert [(t.name, owner) for t, owner in listed] == [("kvmm-t-plat-tok", "admin")]
    users.revoke_token(token.id)
    with pytest.raises(Unauthenticated):
        users.principal_for_token(secret)
    with pytest.raises(Unauthenticated):
        users.principal_for_token("kvmm_not-a-token")


def test_token_expiry_and_validation(db_manager: Any) -> None:
    users = db_manager.users
    with pytest.raises(InvalidInput) as e:
        users.create_token("admin", "x", datetime.now(UTC) - timedelta(seconds=1))
    assert e.value.field == "expires_at"
    with pytest.raises(InvalidInput) as e:
        users.create_token("admin", "bad\nname")
    assert e.value.field == "name"
    token, secret = users.create_token("admin", "soon", datetime.now(UTC) + timedelta(hours=1))
    from kvmmanager.db.models import ApiToken

    with db_manager.db.begin() as s:
        s.get(ApiToken, token.id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(Unauthenticated, match="expired"):
        users.principal_for_token(secret)


def test_reset_admin(db_manager: Any) -> None:
    new = db_manager.users.reset_admin()
    assert db_manager.users.authenticate("admin", new).role == "admin"
    assert db_manager.users.initial_password_file().read_text().strip() == new


def test_changing_the_one_time_password_removes_its_file(db_manager: Any) -> None:
    # Left in place, every restart said "the first admin password is in <file>" and the
    # password there no longer worked (found by the issue 15 newcomer try).
    path = db_manager.users.initial_password_file()
    assert path.exists()
    db_manager.users.set_password("admin", "a-new-admin-password-1")
    assert not path.exists()


def test_another_users_password_change_keeps_the_admins_file(db_manager: Any) -> None:
    db_manager.users.create("kvmm-t-other", "kvmm-t-password-1", "viewer")
    db_manager.users.set_password("kvmm-t-other", "kvmm-t-password-2")
    assert db_manager.users.initial_password_file().exists()
