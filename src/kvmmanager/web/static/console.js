// VNC (noVNC) and serial (xterm.js) consoles of the VM detail page. Both connect to
// WebSockets of our own server, which reaches the VM through libvirt; authentication is
// the session cookie, and the VNC password never reaches the browser.
import RFB from "/vendor/novnc/core/rfb.js";
import keysyms from "/vendor/novnc/core/input/keysymdef.js";

const wsUrl = (path) => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
let rfb = null;

function setStatus(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }

function connectVnc() {
  const screen = document.getElementById("vnc-screen");
  if (!screen || rfb) return;
  setStatus("vnc-status", "connecting…");
  rfb = new RFB(screen, wsUrl(screen.dataset.vncUrl), { wsProtocols: ["binary"] });
  rfb.scaleViewport = true;
  rfb.addEventListener("connect", () => setStatus("vnc-status", "connected"));
  rfb.addEventListener("disconnect", (e) => {
    setStatus("vnc-status", e.detail.clean ? "disconnected" : "connection lost");
    rfb = null;
  });
}

function typeText(text) {
  if (!rfb) return;
  for (const ch of text) {
    const sym = ch === "\n" ? 0xff0d : keysyms.lookup(ch.codePointAt(0));
    rfb.sendKey(sym, null, true);
    rfb.sendKey(sym, null, false);
  }
}

document.addEventListener("click", (e) => {
  const action = e.target.dataset && e.target.dataset.vncAction;
  if (action === "connect") connectVnc();
  if (action === "cad" && rfb) rfb.sendCtrlAltDel();
  if (action === "fullscreen") document.getElementById("vnc-screen").requestFullscreen();
  if (action === "paste") typeText(document.getElementById("vnc-paste").value);
  if (e.target.dataset && e.target.dataset.serialAction === "connect") connectSerial();
});

let term = null;
function connectSerial() {
  const box = document.getElementById("serial-terminal");
  if (!box || !window.Terminal) return;
  if (!term) {
    term = new window.Terminal({ convertEol: false, scrollback: 5000 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
  }
  setStatus("serial-status", "connecting…");
  const ws = new WebSocket(wsUrl(box.dataset.serialUrl));
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setStatus("serial-status", "connected");
  ws.onclose = () => setStatus("serial-status", "disconnected");
  ws.onmessage = (m) => term.write(new Uint8Array(m.data));
  term.onData((d) => { if (ws.readyState === 1) ws.send(new TextEncoder().encode(d)); });
}

document.addEventListener("kvmm-tab", (e) => { if (e.detail === "console") { connectVnc(); connectSerial(); } });
if (location.hash === "#console") { connectVnc(); connectSerial(); }
