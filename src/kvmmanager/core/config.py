"""Configuration: one TOML file plus KVMM_* environment overrides, with defaults for all.

Lookup order for the file: $KVMM_CONFIG, then /etc/kvm-manager/config.toml when running as
root, else $XDG_CONFIG_HOME/kvm-manager/config.toml. A nested key is overridden by
KVMM_<SECTION>__<KEY>, e.g. KVMM_SERVER__PORT=9000 or KVMM_DATABASE__URL=postgresql://...
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _is_root() -> bool:
    return os.geteuid() == 0


def default_config_file() -> Path:
    if env := os.environ.get("KVMM_CONFIG"):
        return Path(env)
    if _is_root():
        return Path("/etc/kvm-manager/config.toml")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kvm-manager" / "config.toml"


def default_data_dir() -> Path:
    if _is_root():
        return Path("/var/lib/kvm-manager")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "kvm-manager"


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    # Public base URL used in links the server prints; derived from host/port when empty.
    base_url: str = ""
    # What one client may make the server hold (docs/security.md, "Limits"). A request
    # body FastAPI parses (JSON, forms) may have this many bytes; streaming uploads have
    # their own limits. It is counted while the body arrives, before any parsing.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # The whole body of such a request must arrive within this time.
    body_timeout_seconds: float = Field(30.0, gt=0)
    # A request's headers must be complete this long after the connection opened (or
    # after the previous response on a kept-alive connection).
    header_timeout_seconds: float = Field(10.0, gt=0)
    # An idle kept-alive connection is closed after this long.
    keep_alive_seconds: int = Field(5, ge=1)
    # Open connections in all; the server lowers it to fit its descriptor limit. When
    # full, a new connection closes the oldest one that has no request in progress.
    max_connections: int = Field(4096, ge=16)
    # Open connections from one client address (a trusted proxy's own address is exempt).
    max_connections_per_address: int = Field(256, ge=1)
    # Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto are believed
    # (e.g. ["127.0.0.1"] behind a local nginx). Empty: forwarded headers are ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Strict-Transport-Security max-age sent on https responses; 0 sends none.
    hsts_seconds: int = Field(31536000, ge=0)


class DatabaseSettings(BaseModel):
    # Empty means SQLite (WAL) at <data_dir>/kvm-manager.db.
    url: str = ""


class LibvirtSettings(BaseModel):
    default_uri: str = "qemu:///system"
    keepalive_interval: int = 5
    keepalive_count: int = 3
    # Per-call deadlines by kind (virt/calls.py): the API answers 504 after them. Jobs
    # (copies, migrations, uploads) have none: they report progress and can be cancelled.
    deadline_read_seconds: float = Field(10.0, gt=0)
    deadline_lifecycle_seconds: float = Field(60.0, gt=0)
    # A cheap call (getLibVersion) every `heartbeat_seconds`, and at once after a call
    # passes its deadline; unanswered for `not_responding_seconds`, the host is marked
    # "not responding" and its calls are refused up front until it answers again.
    heartbeat_seconds: float = Field(5.0, gt=0)
    not_responding_seconds: float = Field(3.0, gt=0)
    # An open of the connection unanswered this long marks the host "not responding"
    # (a frozen daemon accepts the socket and answers nothing); the open keeps waiting,
    # since a daemon that thaws answers it. Generous: an ssh handshake takes seconds.
    connect_seconds: float = Field(15.0, gt=0)
    # The accelerator probe runs in the background at connect, within this deadline; a VM
    # create waits for it at most `accel_wait_seconds`, then uses the last known answer.
    probe_deadline_seconds: float = Field(120.0, gt=0)
    accel_wait_seconds: float = Field(10.0, gt=0)
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    # Worker threads per host for blocking libvirt calls, so one slow host never blocks another.
    workers_per_host: int = 4
    # At most this many of them run calls about one VM at once (virt/calls.py): a VM whose
    # QEMU monitor hangs must not take every worker of its host.
    calls_per_vm: int = Field(2, ge=1)
    # "auto" probes each host (domain capabilities + a real guest); "kvm"/"tcg" force it.
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    # libvirt's test driver (test:///...) parses whatever file its URI names: off unless a
    # test or benchmark turns it on (KVMM_LIBVIRT__ALLOW_TEST_DRIVER=1).
    allow_test_driver: bool = False


class AuthSettings(BaseModel):
    session_hours: int = 12
    # Login attempts one client address may make per minute, whatever the user names.
    login_attempts_per_minute: int = Field(10, ge=1)
    # Failed logins for one user from one address before each further attempt from that
    # address waits (1 s, doubling up to the maximum). Other addresses are not affected.
    login_free_failures: int = Field(5, ge=1)
    login_backoff_max_seconds: int = Field(900, ge=1)
    # Where the first admin password is written (0600) on first start; empty = <data_dir>.
    initial_password_file: str = ""


class AgentSettings(BaseModel):
    iso_path: str = ""
    iso_search: list[str] = Field(default_factory=list)
    iso_pool: str = "default"
    eject_after_install: bool = False
    ping_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 30.0
    exec_timeout_seconds: float = 300.0
    max_reply_bytes: int = 16 * 1024 * 1024
    max_line_bytes: int = 1024 * 1024
    prefer_unix_socket: bool = True
    # Methods a role may call beyond the defaults, e.g. {"viewer": ["get_metrics"]}.
    allow: dict[str, list[str]] = Field(default_factory=dict)


class MetricsSettings(BaseModel):
    interval_seconds: float = 2.0
    # Keep the history in the database so graphs survive a restart: 5-minute means for
    # 24 h and hourly means for `retention_days` (older rows are deleted automatically).
    persist: bool = True
    retention_days: int = Field(30, ge=1, le=3650)
    # How often connected agents are asked for guest metrics; 0 = the service's default.
    guest_interval_seconds: float = 0
    prometheus_token: str = ""


class SpiceSettings(BaseModel):
    # Where new SPICE displays listen on the hypervisor. 127.0.0.1 keeps them private to the
    # host (reach them through an SSH tunnel); 0.0.0.0 lets remote-viewer connect directly,
    # guarded by the one-time password of each .vv file.
    listen: str = "127.0.0.1"
    # Address remote-viewer should connect to, per host name ({"local": "hv1.example.org"});
    # without one, the listen address or the host part of the host's libvirt URI is used.
    addresses: dict[str, str] = Field(default_factory=dict)
    # How long the password in a downloaded .vv file stays valid.
    ticket_seconds: int = Field(300, ge=30, le=86400)


class AuditSettings(BaseModel):
    # Entries older than this are deleted by the server (checked at start, then every
    # `prune_interval_seconds`).
    retention_days: int = Field(365, ge=1, le=36500)
    prune_interval_seconds: float = Field(3600.0, gt=0)
    # Failed requests by clients that are not logged in are recorded at most this often
    # per client address and in all per minute; beyond that one summary entry per address
    # and minute counts what was left out.
    anonymous_failures_per_minute_per_address: int = Field(20, ge=0)
    anonymous_failures_per_minute: int = Field(200, ge=0)


class OutboundSettings(BaseModel):
    # Webhooks and alert e-mail may reach only public addresses. Networks listed here
    # (CIDR, e.g. "10.0.0.0/8", "127.0.0.1/32") are allowed too: an internal mail relay
    # or webhook receiver the admin chose.
    allow_networks: list[str] = Field(default_factory=list)


class FleetSettings(BaseModel):
    # Instances sharing a database: each writes a heartbeat row every `heartbeat_seconds`
    # and, with it, renews the singleton lease if it holds it (or takes it when it has
    # expired). The lease lasts `lease_seconds` from its last renewal, so a holder killed
    # with -9 is replaced within lease_seconds + heartbeat_seconds.
    heartbeat_seconds: float = Field(3.0, gt=0, le=60)
    lease_seconds: float = Field(10.0, gt=0, le=600)
    # Where export bundles are written and read; empty = <data_dir>/exports. Instances
    # sharing a database point it at one directory they all reach (NFS, or one path on
    # one machine), so a bundle made through one instance downloads through any.
    exports_dir: Path | None = None

    @model_validator(mode="after")
    def _renewed_in_time(self) -> FleetSettings:
        # A holder must renew well before its lease runs out, even after a slow beat.
        if self.lease_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("fleet.lease_seconds must be at least twice fleet.heartbeat_seconds")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KVMM_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "info"
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    libvirt: LibvirtSettings = Field(default_factory=LibvirtSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    spice: SpiceSettings = Field(default_factory=SpiceSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_config_file())
        return (init_settings, env_settings, toml)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'kvm-manager.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
