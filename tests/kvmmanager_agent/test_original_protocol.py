"""The original protocol, field for field: each of its ten methods' documented example
request, sent to the shipped agent, gets a reply with every documented field under the
same name and of the same JSON type (an integer stays an integer, a string a string).
And the original's example config file starts the agent.

The examples and the config are quoted from guest-agent/PROTOCOL.md of the original
project (theonlytruebigmac/kvm-manager, protocol 1.0.0), comments removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.kvmmanager_agent.agentproc import AgentProcess, Interpreter, build_pyz, interpreters
from tests.kvmmanager_agent.conftest import Raw, RunningAgent

PYTHONS = interpreters()

ORIGINAL_CONFIG = """{
  "version": "1.0.0",
  "log_level": "info",
  "log_file": "/var/log/kvmmanager-agent.log",
  "channel_name": "org.kvmmanager.agent.0",
  "max_message_size_kb": 64,
  "connection_retry_seconds": 5,
  "request_timeout_seconds": 30,
  "max_concurrent_requests": 10,
  "security": {
    "allowed_read_paths": ["/tmp", "/var/log", "/etc/hostname", "/etc/os-release"],
    "allowed_write_paths": ["/tmp/kvmmanager"],
    "command_whitelist": null,
    "max_file_size_mb": 10,
    "max_command_timeout_seconds": 300
  }
}
"""

# (request, documented response) for each of the ten methods.
EXAMPLES: dict[str, tuple[str, str]] = {
    "ping": (
        '{"jsonrpc": "2.0", "method": "ping", "id": 1}',
        '{"jsonrpc": "2.0", "result": {"pong": true, "timestamp": 1702123456}, "id": 1}',
    ),
    "get_agent_info": (
        '{"jsonrpc": "2.0", "method": "get_agent_info", "id": 2}',
        """{"jsonrpc": "2.0", "result": {"version": "1.0.0", "protocol_version": "1.0.0",
        "platform": "linux", "capabilities": ["system_info", "exec_command", "file_read",
        "file_write", "shutdown", "reboot"]}, "id": 2}""",
    ),
    "get_system_info": (
        '{"jsonrpc": "2.0", "method": "get_system_info", "id": 3}',
        """{"jsonrpc": "2.0", "result": {"os_type": "linux", "os_name": "Ubuntu",
        "os_version": "22.04 LTS", "kernel_version": "5.15.0-89-generic",
        "hostname": "ubuntu-vm", "architecture": "x86_64", "cpu_count": 4,
        "total_memory_kb": 4194304, "uptime_seconds": 3600}, "id": 3}""",
    ),
    "get_network_info": (
        '{"jsonrpc": "2.0", "method": "get_network_info", "id": 4}',
        """{"jsonrpc": "2.0", "result": {"interfaces": [{"name": "eth0",
        "mac_address": "52:54:00:12:34:56", "ipv4_addresses": ["192.168.122.10/24"],
        "ipv6_addresses": ["fe80::5054:ff:fe12:3456/64"], "state": "up", "mtu": 1500},
        {"name": "lo", "mac_address": "00:00:00:00:00:00", "ipv4_addresses": ["127.0.0.1/8"],
        "ipv6_addresses": ["::1/128"], "state": "up", "mtu": 65536}]}, "id": 4}""",
    ),
    "exec_command": (
        """{"jsonrpc": "2.0", "method": "exec_command", "params": {"command": "ls",
        "args": ["-la", "/tmp"], "timeout_seconds": 30, "capture_output": true,
        "working_directory": "/tmp"}, "id": 5}""",
        """{"jsonrpc": "2.0", "result": {"exit_code": 0,
        "stdout": "total 12\\ndrwxrwxrwt 10 root root 4096 Dec  9 10:30 .\\n...",
        "stderr": "", "execution_time_ms": 45}, "id": 5}""",
    ),
    "file_read": (
        """{"jsonrpc": "2.0", "method": "file_read", "params": {"path": "/etc/hostname",
        "encoding": "utf8"}, "id": 6}""",
        """{"jsonrpc": "2.0", "result": {"content": "ubuntu-vm\\n", "size_bytes": 11,
        "encoding": "utf8"}, "id": 6}""",
    ),
    "file_write": (
        """{"jsonrpc": "2.0", "method": "file_write", "params": {
        "path": "/tmp/kvmmanager-data.txt", "content": "Hello from host!", "encoding": "utf8",
        "create_dirs": true, "permissions": "0644"}, "id": 7}""",
        """{"jsonrpc": "2.0", "result": {"bytes_written": 16,
        "path": "/tmp/kvmmanager-data.txt"}, "id": 7}""",
    ),
    "shutdown": (
        """{"jsonrpc": "2.0", "method": "shutdown", "params": {"timeout_seconds": 60,
        "force": false}, "id": 8}""",
        """{"jsonrpc": "2.0", "result": {"initiated": true,
        "message": "Shutdown initiated"}, "id": 8}""",
    ),
    "reboot": (
        """{"jsonrpc": "2.0", "method": "reboot", "params": {"timeout_seconds": 60,
        "force": false}, "id": 9}""",
        """{"jsonrpc": "2.0", "result": {"initiated": true,
        "message": "Reboot initiated"}, "id": 9}""",
    ),
    "get_disk_usage": (
        '{"jsonrpc": "2.0", "method": "get_disk_usage", "id": 10}',
        """{"jsonrpc": "2.0", "result": {"filesystems": [{"mount_point": "/",
        "device": "/dev/vda1", "fs_type": "ext4", "total_bytes": 21003583488,
        "used_bytes": 8403345408, "available_bytes": 11523674112, "used_percent": 40.0}]},
        "id": 10}""",
    ),
}
# Powering off the machine that runs the tests is not an option: these two are held
# against the agent in this process, with the power action recorded instead of run.
IN_PROCESS = ("shutdown", "reboot")


def json_type(value: Any) -> str:
    """The JSON type as a strict parser sees it: 3 is an integer, 3.0 a number."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def shape_errors(documented: Any, got: Any, where: str = "result") -> list[str]:
    """Every documented field that is missing or of another JSON type in `got`."""
    if json_type(documented) != json_type(got):
        return [f"{where}: {json_type(got)} where the original has {json_type(documented)}"]
    errors: list[str] = []
    if isinstance(documented, dict):
        for key, value in documented.items():
            if key not in got:
                errors.append(f"{where}.{key}: missing")
            else:
                errors += shape_errors(value, got[key], f"{where}.{key}")
    elif isinstance(documented, list) and documented:
        for i, item in enumerate(got):
            errors += shape_errors(documented[0], item, f"{where}[{i}]")
    return errors


def check_example(name: str, send: Callable[[bytes], Any], path_for_write: str) -> None:
    request_text, response_text = EXAMPLES[name]
    request = json.loads(request_text)
    documented = json.loads(response_text)
    if name == "file_write":
        request["params"]["path"] = path_for_write
    reply = send(json.dumps(request).encode() + b"\n")
    assert reply.get("id") == documented["id"] and "result" in reply, reply
    assert shape_errors(documented["result"], reply["result"]) == []
    if name in ("get_network_info", "get_disk_usage"):
        listed = next(iter(reply["result"].values()))
        assert listed, reply  # the element check above ran on something


def test_the_documented_examples_are_the_ten_original_methods() -> None:
    assert len(EXAMPLES) == 10
    for name, (request, _) in EXAMPLES.items():
        assert json.loads(request)["method"] == name


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("pyz"))


@pytest.fixture(scope="module", params=PYTHONS, ids=[p.label for p in PYTHONS])
def original(
    request: pytest.FixtureRequest, pyz: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    """The agent on the original example config, writing its log and the written file
    into this test's directory instead of /var/log and /tmp."""
    python: Interpreter = request.param
    workdir = tmp_path_factory.mktemp("original")
    (workdir / "out").mkdir()
    config = json.loads(ORIGINAL_CONFIG)
    config["log_file"] = str(workdir / "agent-file.log")
    config["security"]["allowed_write_paths"].append(str(workdir / "out"))
    proc = AgentProcess(python, pyz, workdir, config=config)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


OVER_THE_PORT = [name for name in EXAMPLES if name not in IN_PROCESS]


@pytest.mark.parametrize("name", OVER_THE_PORT)
def test_original_example_over_the_shipped_agent(original: AgentProcess, name: str) -> None:
    def send(data: bytes) -> Any:
        original.send(data)
        return original.reply()

    check_example(name, send, str(original.workdir / "out" / "kvmmanager-data.txt"))
    original.assert_alive()


@pytest.mark.parametrize("name", IN_PROCESS)
def test_original_power_example(
    start_agent: Callable[..., RunningAgent], tmp_path: Path, name: str
) -> None:
    running = start_agent()
    raw = Raw(running.path)
    try:

        def send(data: bytes) -> Any:
            raw.send(data)
            return raw.reply()

        check_example(name, send, str(tmp_path / "unused"))
        assert running.ctx.power.event.wait(10)  # the action was handed over, not run
        argv, delay = running.ctx.power.calls[0]
        assert delay == 60 and argv[-1].rsplit("/", 1)[-1] in ("poweroff", "reboot")
    finally:
        raw.close()


def test_the_types_that_diverged_are_the_originals_now(original: AgentProcess) -> None:
    # The findings, one by one, with the richer values in their new fields.
    ping = original.call("ping")["result"]
    assert type(ping["timestamp"]) is int and type(ping["timestamp_ms"]) is int
    assert ping["timestamp_ms"] // 1000 in (ping["timestamp"], ping["timestamp"] + 1)
    info = original.call("get_agent_info")["result"]
    assert info["protocol_version"] == "1.0.0"
    assert type(info["negotiated_protocol_version"]) is int
    system = original.call("get_system_info")["result"]
    assert type(system["uptime_seconds"]) is int and type(system["uptime"]) is float


@pytest.mark.parametrize("python", PYTHONS, ids=[p.label for p in PYTHONS])
def test_the_original_example_config_starts_the_agent(
    python: Interpreter, pyz: Path, tmp_path: Path
) -> None:
    # Unchanged (its log goes to /var/log/kvmmanager-agent.log, as it says).
    proc = AgentProcess(python, pyz, tmp_path, config_text=ORIGINAL_CONFIG)
    try:
        proc.wait_ready()
        # command_whitelist null: every command allowed, as the original documents...
        reply = proc.call("exec_command", {"command": "true"})
        assert reply["result"]["exit_code"] == 0, reply
        proc.assert_alive()
        # ...and said loudly at start (before the log file is opened: on stderr).
        assert "command_whitelist is null" in proc.log()
        assert "ANY command" in proc.log()
    finally:
        proc.stop()


def test_the_shipped_config_keeps_exec_limited_to_a_list() -> None:
    shipped = json.loads(
        (Path(__file__).parents[2] / "packaging" / "agent" / "config.json").read_text()
    )
    assert isinstance(shipped["security"]["command_whitelist"], list)


def test_the_original_config_warnings_reach_its_log_file(original: AgentProcess) -> None:
    # The null whitelist is said in the configured log file too (not only on stderr,
    # which a service's journal may not keep), and "version" is a known key.
    logged = (original.workdir / "agent-file.log").read_text()
    assert "command_whitelist is null" in logged and "ANY command" in logged
    assert "unknown key" not in logged and "unknown key" not in original.log()
