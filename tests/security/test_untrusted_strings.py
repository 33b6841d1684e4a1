"""Issue 9 item 5: strings a guest (or anyone but the operator) chooses are inert where
people read them — in the CLI (rich markup and raw terminal controls) and in the server's
log lines — and VM descriptions with XML metacharacters round-trip exactly while the
domain XML still validates.

The hostile VM is the test driver's `test` domain with a hostile title and description
set through libvirt (libvirt stores them as given, ESC included); guest facts come from
the real agent (in-process, on a unix socket) whose OS name and hostname are hostile.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

from kvmmanager.agent.transports import UnixTransport
from kvmmanager.cli import output
from kvmmanager.core.logs import InertFilter, logging_config
from kvmmanager.core.sanitize import inert
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml

# Every way a string can drive a terminal or forge a line: SGR colour, cursor moves and
# erase, an OSC-8 hyperlink, a window-title OSC, BEL, backspace, CR overwrite, a one-byte
# C1 CSI, NEL, bidi override/isolate, line separator, rich markup (a link and a style).
HOSTILE = (
    "ok\x1b[38;5;196mPWNED\x1b[0m \x1b[2J\x1b[H"
    "\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07 \x1b]0;title\x07"
    "\x07bell \x08\x08\x08back \rover \x9b31mc1 \x85nel "
    "\u202eevil.exe\u202c \u2066iso\u2069 \u2028sep "
    "zw\u200bsp sh\xady \U000e0041tag fill\u3164er "
    "[link=http://evil.example/]markup[/link] [bold red]styled[/bold red]"
)
# What libvirt can hold in a domain's title/description: XML 1.0 forbids C0 controls
# (libvirt stores them, but its XML is then not well-formed and the VM is listed with
# basic facts only), so the VM carries the C1, bidi and markup part of HOSTILE.
HOSTILE_XML = (
    "ok \x9b31mc1 \x85nel \x9d0;title\x9c \u202eevil.exe\u202c \u2066iso\u2069 \u2028sep "
    "zw\u200bsp sh\xady \U000e0041tag fill\u3164er "
    "[link=http://evil.example/]markup[/link] [bold red]styled[/bold red]"
)
# What must never reach the reader raw (rich's own SGR styles are stripped first): the
# controls and bidi characters, and the invisible ones that make two names look alike
# (zero-width space/joiners, soft hyphen, word joiner, BOM, Hangul filler, tag characters).
RAW_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e"
    "\u2060\u2066-\u2069\u3164\ufeff\U000e0000-\U000e007f]"
)
OWN_SGR = re.compile(r"\x1b\[[0-9;]*m")


def assert_inert_terminal_text(text: str, *, visible: str = "\\x1b[38;5;196mPWNED") -> None:
    """`text` (a terminal's input) carries nothing hostile: no control or bidi character
    apart from the console's own colour codes, no OSC-8 link, the markup shown as text,
    and the escaped form `visible` present."""
    assert "\x1b[38;5;196m" not in text  # the guest's colour
    assert "\x1b]" not in text  # no OSC (hyperlink, window title)
    leftover = RAW_CONTROLS.findall(OWN_SGR.sub("", text))
    assert leftover == [], leftover
    assert "[link=http://evil.example/]markup[/link]" in text  # markup printed, not obeyed
    assert visible in text


# --- core.sanitize ---------------------------------------------------------------------


def test_inert_escapes_every_dangerous_character_and_keeps_the_rest() -> None:
    out = inert(HOSTILE)
    assert RAW_CONTROLS.search(out) is None and "\n" not in out
    for shown in ("\\x1b", "\\x07", "\\x08", "\\r", "\\x9b", "\\x85", "\\u202e", "\\u2028"):
        assert shown in out
    for shown in ("zw\\u200bsp", "sh\\xady", "\\U000e0041tag", "fill\\u3164er"):
        assert shown in out
    assert inert("line 1\nline 2") == "line 1\\nline 2"
    assert inert("line 1\nline 2\ttab", multiline=True) == "line 1\nline 2\ttab"
    plain = "Debian GNU/Linux 12 (bookworm) — héllo 世界 <b>&amp;</b> [x] 🙂"
    assert inert(plain) == plain


# --- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def hostile_test_vm(live_server: Any) -> Iterator[str]:
    """The test driver's `test` domain with a hostile title and description set through
    libvirt, restored afterwards."""
    conn = libvirt.open("test:///default")
    dom = conn.lookupByName("test")
    kinds = (libvirt.VIR_DOMAIN_METADATA_TITLE, libvirt.VIR_DOMAIN_METADATA_DESCRIPTION)
    before = {}
    for kind in kinds:
        try:
            before[kind] = dom.metadata(kind, None)
        except libvirt.libvirtError:
            before[kind] = None
    title = HOSTILE_XML
    description = HOSTILE_XML + "\nsecond line"
    inventory = live_server.manager.inventory
    try:
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_TITLE, title, None, None, 0)
        dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, description, None, None, 0)
        deadline = time.monotonic() + 30
        while inventory.domain("local", "test").description != description:
            assert time.monotonic() < deadline, "the inventory never saw the new description"
            time.sleep(0.05)
        yield description
    finally:
        for kind in kinds:
            dom.setMetadata(kind, before[kind], None, None, 0)
        conn.close()


def test_vm_list_and_show_print_guest_strings_inert(cli: Any, hostile_test_vm: str) -> None:
    for env in ({}, {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}):  # a pipe, and a terminal
        shown = cli("vm", "show", "test", env_extra=env)
        assert shown.exit_code == 0, shown.stderr
        assert_inert_terminal_text(shown.stdout, visible="\\u202eevil.exe")
        assert "\\x9b31mc1" in shown.stdout
        assert "second line" in shown.stdout  # a description's newline stays in its cell
        listed = cli("vm", "list", "--query", "second line", env_extra=env)
        assert listed.exit_code == 0 and "test" in listed.stdout
        assert RAW_CONTROLS.search(OWN_SGR.sub("", listed.stdout)) is None


def test_json_output_is_exact_and_inert(cli: Any, hostile_test_vm: str) -> None:
    result = cli("--json", "vm", "show", "test")
    assert result.exit_code == 0, result.stderr
    assert RAW_CONTROLS.search(result.stdout) is None  # ensure_ascii: \u001b, never ESC
    data = json.loads(result.stdout)
    assert data["description"] == hostile_test_vm  # exact for scripts
    assert data["title"] == HOSTILE_XML


def test_error_messages_and_infos_are_one_inert_line(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_error(f"guest said: {HOSTILE}\nerror: forged")
    output.info(f"deleted {HOSTILE}\nforged line")
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.startswith("error: guest said: ok")
    assert RAW_CONTROLS.search(err) is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_command_output_is_escaped_on_a_terminal_unless_raw() -> None:
    out = _Tty()
    output.write_output(out, "a\x1b[31mred\x1b[0m\nb\t\r\n")
    assert out.getvalue() == "a\\x1b[31mred\\x1b[0m\nb\t\\r\n"
    out = _Tty()
    output.write_output(out, "a\x1b[31mred\n", raw=True)
    assert out.getvalue() == "a\x1b[31mred\n"
    piped = io.StringIO()
    output.write_output(piped, "a\x1b[31mred\r\n")
    assert piped.getvalue() == "a\x1b[31mred\r\n"  # a pipe or file gets the exact bytes


# The real agent's fixtures (a thread serving on a unix socket).
_path = Path(__file__).parents[1] / "kvmmanager_agent" / "conftest.py"
_spec = importlib.util.spec_from_file_location("kvmm_t_agent_fixtures_untrusted", _path)
assert _spec is not None and _spec.loader is not None
_fx = importlib.util.module_from_spec(_spec)
sys.modules["kvmm_t_agent_fixtures_untrusted"] = _fx
_spec.loader.exec_module(_fx)
roots = _fx.roots
start_agent = _fx.start_agent
agent = _fx.agent


@pytest.fixture
def hostile_guest_cli(
    cli: Any, live_server: Any, agent: Any, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The CLI against a VM whose agent reports a hostile OS name and hostname."""
    from kvmmanager_agent.methods import system

    real_uname = os.uname()
    fake_uname = os.uname_result(
        (real_uname.sysname, HOSTILE, real_uname.release, real_uname.version, real_uname.machine)
    )
    monkeypatch.setattr(system, "os_release", lambda: {"PRETTY_NAME": HOSTILE, "ID": "x\x1b[2J"})
    monkeypatch.setattr(system.os, "uname", lambda: fake_uname)
    manager = live_server.manager
    deadline = time.monotonic() + 30
    while not manager.registry.get("local").connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    info = manager.inventory.domain("local", "test")
    manager.inventory.put_domain(dataclasses.replace(info, agent_status="connected"))

    async def opener(host_name: str, vm_uuid: str) -> Any:
        return await UnixTransport.open(agent.path)

    manager.agents._opener = opener
    return cli


def test_guest_facts_are_inert(hostile_guest_cli: Any) -> None:
    """`agent system` prints the agent's reply as sent; `agent info` goes through
    GuestInfo, which already drops C0 controls (agent/models.py) but keeps C1, bidi and
    markup characters: both must reach the terminal inert."""
    # Wide enough that no cell folds in the middle of an escape.
    for env in (
        {"COLUMNS": "3000"},
        {"COLUMNS": "3000", "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"},
    ):
        system = hostile_guest_cli("agent", "system", "test", env_extra=env)
        assert system.exit_code == 0, system.stderr
        assert_inert_terminal_text(system.stdout)
        info = hostile_guest_cli("agent", "info", "test", env_extra=env)
        assert info.exit_code == 0, info.stderr
        assert_inert_terminal_text(info.stdout, visible="\\u202eevil.exe")
    data = json.loads(hostile_guest_cli("--json", "agent", "system", "test").stdout)
    assert data["hostname"] == HOSTILE and data["os_name"] == HOSTILE


def test_exec_output_is_exact_to_a_pipe_and_guest_errors_are_inert(
    hostile_guest_cli: Any,
) -> None:
    payload = "\x1b]8;;http://evil.example/\x07x\x1b]8;;\x07\x1b[31mred\x08\x1b[0m\n"
    for extra in ((), ("--wait",)):
        result = hostile_guest_cli(
            "agent", "exec", "test", *extra, "sh", "-c", 'printf "$0"', payload
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout == payload  # the user's data, byte for byte, to a pipe
    # A guest error quoting the (guest-reflected) command name: one inert line.
    result = hostile_guest_cli("agent", "exec", "test", "\x1b]0;pwned\x07evil\nforged")
    assert result.exit_code != 0
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert RAW_CONTROLS.search(result.stderr) is None, result.stderr


# --- logs ------------------------------------------------------------------------------


def _records(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_log_records_stay_one_line_whatever_they_carry() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(InertFilter())
    log = logging.getLogger("kvmm-t-sec.untrusted")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    forged = "\nCRITICAL kvmmanager: admin password reset\x1b[2K"
    try:
        log.info("agent probe %s/%s: %s", "local", "uuid-1", HOSTILE + forged)
        log.warning(f"vm {HOSTILE}{forged}: agent shutdown failed")
        log.info("mapping %(host)s", {"host": HOSTILE + forged})
        log.info("count %d, ratio %.1f", 3, 0.5)
        try:
            raise RuntimeError(f"guest said {HOSTILE}{forged}")
        except RuntimeError:
            log.exception("agent call failed: %s", ValueError(forged))
    finally:
        log.removeHandler(handler)
    lines = _records(stream)
    assert RAW_CONTROLS.search(stream.getvalue().replace("\n", "")) is None
    # Each record begins with its level; continuation lines (the traceback) are indented
    # or the traceback header, so no line can pass for a record of its own.
    heads = [line for line in lines if re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line)]
    assert [h.split()[0] for h in heads] == ["INFO", "WARNING", "INFO", "INFO", "ERROR"]
    assert lines[3] == "INFO kvmm-t-sec.untrusted: count 3, ratio 0.5"  # %d, %.1f intact
    rest = [line for line in lines if line not in heads]
    assert rest[0] == "Traceback (most recent call last):"
    assert all(line.startswith(" ") for line in rest[1:]), rest
    assert any("CRITICAL kvmmanager: admin password reset" in line for line in rest)


def test_serve_logging_config_is_inert_for_uvicorn_and_our_loggers(tmp_path: Path) -> None:
    """The config `kvm-manager serve` hands to uvicorn, applied in a fresh interpreter:
    our loggers, uvicorn's error log and its access log (the URL path is the client's)."""
    script = f"""
import logging, logging.config
from kvmmanager.core.logs import logging_config
logging.config.dictConfig(logging_config("debug"))
hostile = {HOSTILE!r} + "\\nCRITICAL forged"
logging.getLogger("kvmmanager.services.guest.agents").info(
    "agent probe %s/%s: %s", "local", "u", hostile
)
logging.getLogger("uvicorn.error").warning("Invalid HTTP request: %s", hostile)
logging.getLogger("uvicorn.access").info(
    '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/api/" + hostile, "1.1", 404
)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    out = proc.stdout + proc.stderr
    assert RAW_CONTROLS.search(out.replace("\n", "")) is None, out
    lines = out.splitlines()
    assert len(lines) == 3, lines
    assert sum("CRITICAL forged" in line for line in lines) == 3


def test_serve_installs_the_inert_logging_config(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from kvmmanager.cli.main import app as cli_app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    result = CliRunner().invoke(cli_app, ["serve", "--port", "1"])
    assert result.exit_code == 0, result.output
    assert seen["log_config"] == logging_config(settings.log_level)
    handlers = seen["log_config"]["handlers"].values()
    assert all(h["filters"] == ["inert"] for h in handlers)


# --- XML metacharacters ----------------------------------------------------------------

XML_META = "a <b>&amp; \"quoted\" 'apos' ]]> <!-- c --> <![CDATA[x]]> &lt; &#x41; <?pi?>\n\tok"


@pytest.fixture
def vm_name(client: TestClient) -> Iterator[str]:
    name = f"kvmm-t-sec-xml-{uuid.uuid4().hex[:8]}"
    yield name
    client.delete(f"/api/hosts/local/vms/{name}")


def test_descriptions_with_xml_metacharacters_round_trip(
    client: TestClient, vm_name: str, wait: Callable[..., Any]
) -> None:
    base = f"/api/hosts/local/vms/{vm_name}"
    r = client.post(
        "/api/hosts/local/vms", json={"name": vm_name, "memory_mib": 64, "description": XML_META}
    )
    assert r.status_code == 201, r.text
    assert r.json()["vm"]["description"] == XML_META
    assert client.get(base).json()["description"] == XML_META
    for inactive in (True, False):
        xml = client.get(f"{base}/xml", params={"inactive": inactive}).json()["xml"]
        validate_xml(xml, "domain")
        assert Domain.from_xml(xml).description == XML_META
    changed = XML_META[::-1]
    r = client.patch(base, json={"description": changed})
    assert r.status_code == 200, r.text
    wait(lambda: client.get(base).json()["description"] == changed)
    xml = client.get(f"{base}/xml", params={"inactive": True}).json()["xml"]
    validate_xml(xml, "domain")
    assert Domain.from_xml(xml).description == changed


@pytest.fixture
def wait() -> Callable[..., Any]:
    def poll(fn: Callable[[], Any], seconds: float = 30.0) -> Any:
        deadline = time.monotonic() + seconds
        while not (value := fn()):
            assert time.monotonic() < deadline, f"condition not met within {seconds} s"
            time.sleep(0.05)
        return value

    return poll


# ---- the web UI: every printed value goes through the same rule (web/templating.py) ----


def _page(live_server: Any, path: str) -> str:
    import httpx

    auth = {"Authorization": f"Bearer {live_server.token}"}
    r = httpx.get(live_server.url + path, headers=auth, timeout=60)
    assert r.status_code == 200, (path, r.text[:500])
    return r.text


def test_web_pages_show_vm_strings_inert(live_server: Any, hostile_test_vm: str) -> None:
    """A VM's title and description (set through libvirt) carry C1 controls, bidi
    overrides/isolates and a line separator: the pages show them as escapes."""
    for path in ("/vms", "/vms/local/test", "/vms/local/test/overview"):
        text = _page(live_server, path)
        assert not RAW_CONTROLS.search(text), (path, RAW_CONTROLS.findall(text))
    overview = _page(live_server, "/vms/local/test/overview")
    for shown in ("\\u202eevil.exe\\u202c", "\\u2066iso\\u2069", "\\x9b31mc1", "\\u2028sep"):
        assert shown in overview, shown
    for shown in ("zw\\u200bsp", "sh\\xady", "\\U000e0041tag", "fill\\u3164er"):
        assert shown in overview, shown


def test_web_guest_facts_are_inert(hostile_guest_cli: Any, live_server: Any) -> None:
    text = _page(live_server, "/vms/local/test/guest")
    assert not RAW_CONTROLS.search(text), RAW_CONTROLS.findall(text)
    assert "\\u202eevil.exe" in text


def test_web_audit_page_shows_anonymous_strings_inert(client: TestClient) -> None:
    """An anonymous login's user name lands in the admin's audit log page."""
    from fastapi.testclient import TestClient as Client

    anon = Client(client.app, raise_server_exceptions=False)
    anon.portal = client.portal
    anon.post("/api/auth/login", json={"username": "adm\u202enimda\u2066x", "password": "x"})
    text = client.get("/audit").text
    assert not RAW_CONTROLS.search(text), RAW_CONTROLS.findall(text)
    assert "adm\\u202enimda\\u2066x" in text
