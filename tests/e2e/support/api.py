"""A small REST client for the scenarios: every route the suite drives, in one place.

The suite must act like the UI does, so it only talks HTTP to the manager; libvirt is
read directly only to check facts (what libvirt says against what the API says) and
to sweep up after a failed run.
"""

from __future__ import annotations

from typing import Any

import httpx

HOST = "local"


class ApiError(AssertionError):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        err = body.get("error", {}) if isinstance(body, dict) else {}
        self.code = err.get("code")
        self.field = err.get("field")
        super().__init__(f"{method} {path} -> {status}: {body}")


class Api:
    def __init__(self, base_url: str, token: str, host: str = HOST) -> None:
        self.host = host
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(180, connect=10),
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.http.request(method, path, **kwargs)
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = resp.text
        if resp.status_code >= 400:
            raise ApiError(method, path, resp.status_code, body)
        return body

    # ---- host-scoped paths -------------------------------------------------------
    def _h(self, rest: str) -> str:
        return f"/api/hosts/{self.host}/{rest}"

    def _vm(self, vm: str, rest: str = "") -> str:
        return self._h(f"vms/{vm}" + (f"/{rest}" if rest else ""))

    # ---- networks, pools, volumes ----------------------------------------------
    def create_network(self, **spec: Any) -> Any:
        return self.call("POST", self._h("networks"), json=spec)

    def delete_network(self, name: str) -> Any:
        return self.call("DELETE", self._h(f"networks/{name}"))

    def networks(self) -> list[dict]:
        return self.call("GET", self._h("networks"))

    def create_pool(self, **spec: Any) -> Any:
        return self.call("POST", self._h("pools"), json=spec)

    def delete_pool(self, name: str) -> Any:
        return self.call("DELETE", self._h(f"pools/{name}"), params={"delete_volumes": True})

    def pools(self) -> list[dict]:
        return self.call("GET", self._h("pools"))

    def volumes(self, pool: str) -> list[dict]:
        return self.call("GET", self._h(f"pools/{pool}/volumes"))

    # ---- VMs -----------------------------------------------------------------------
    def create_vm(self, spec: dict[str, Any]) -> Any:
        return self.call("POST", self._h("vms"), json=spec)

    def vm(self, vm: str) -> dict:
        return self.call("GET", self._vm(vm))

    def vm_xml(self, vm: str) -> str:
        resp = self.http.get(self._vm(vm, "xml"))
        if resp.status_code >= 400:
            raise ApiError("GET", self._vm(vm, "xml"), resp.status_code, resp.text)
        ctype = resp.headers.get("content-type", "")
        return resp.json()["xml"] if "json" in ctype else resp.text

    def vms(self) -> list[dict]:
        body = self.call("GET", "/api/vms")
        return body["vms"] if isinstance(body, dict) and "vms" in body else body

    def action(self, vm: str, action: str, **body: Any) -> Any:
        return self.call("POST", self._vm(vm, f"actions/{action}"), json=body or None)

    def delete_vm(self, vm: str) -> Any:
        return self.call("DELETE", self._vm(vm), params={"remove_volumes": True})

    def eject(self, vm: str) -> Any:
        return self.call("DELETE", self._vm(vm, "media"))

    # ---- agent delivery (ISO deploy, install-agent) ---------------------------------
    def deploy_agent_iso(self, pool: str) -> Any:
        return self.call("POST", self._h("agent-iso/deploy"), json={"pool": pool})

    def install_agent(self, vm: str, pool: str) -> Any:
        return self.call("POST", self._h(f"agent-iso/install/{vm}"), json={"pool": pool})

    def eject_agent_iso(self, vm: str) -> Any:
        return self.call("POST", self._h(f"agent-iso/eject/{vm}"))

    # ---- agent methods (/api/hosts/{host}/vms/{vm}/agent/...) --------------------------
    def agent(self, vm: str, what: str, method: str = "GET", **kwargs: Any) -> Any:
        return self.call(method, self._vm(vm, f"agent/{what}"), **kwargs)

    def agent_status(self, vm: str) -> Any:
        return self.agent(vm, "status")

    def ping(self, vm: str) -> Any:
        return self.agent(vm, "ping", "POST")

    def exec(self, vm: str, command: str, *args: str, timeout: int = 30) -> Any:
        body = {"command": command, "args": list(args), "timeout_seconds": timeout}
        return self.agent(vm, "exec", "POST", json=body)

    def read_file(self, vm: str, path: str, encoding: str = "utf8") -> Any:
        return self.agent(vm, "files", params={"path": path, "encoding": encoding})

    def write_file(self, vm: str, path: str, content: str, encoding: str = "utf8") -> Any:
        body = {"path": path, "content": content, "encoding": encoding}
        return self.agent(vm, "files", "POST", json=body)

    def upload(self, vm: str, path: str, data: bytes) -> Any:
        """Chunked transfer host -> guest (any size)."""
        return self.agent(vm, "files/content", "PUT", params={"path": path}, content=data)

    def download(self, vm: str, path: str) -> bytes:
        """Chunked transfer guest -> host (any size)."""
        url = self._vm(vm, "agent/files/content")
        resp = self.http.get(url, params={"path": path})
        if resp.status_code >= 400:
            raise ApiError("GET", url, resp.status_code, resp.text)
        return resp.content

    def job(self, job_id: str) -> dict:
        return self.call("GET", f"/api/jobs/{job_id}")
