// VNC (noVNC) and serial (xterm.js) consoles of the VM detail page. Both connect to
// WebSockets of our own server, which reaches the VM through libvirt; authentication is
// the session cookie, and the VNC password never reaches the browser.
//
// The Console tab follows the VM's live state: the Overview's #vm-state badge is
// re-rendered by the event stream, and after each swap this file shows the consoles (and
// connects them while the tab is open) or the "Start the VM" hint.
import RFB from "/vendor/novnc/core/rfb.js";
import keysyms from "/vendor/novnc/core/input/keysymdef.js";

const wsUrl = (path) => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
const RUNNING = ["running", "paused", "blocked"];
let rfb = null;
let serial = null; // the open WebSocket of the serial console
let term = null;

function setStatus(id, text) { const el = document.getElementById(id); if (el) el.textContent = text; }

function consoleTabOpen() {
  const panel = document.querySelector('[data-panel="console"]');
  return Boolean(panel && !panel.hidden);
}

function vmRunning() {
  const badge = document.getElementById("vm-state");
  if (badge) return RUNNING.includes(badge.dataset.vmState); // libvirt's name; the text is for people
  const box = document.getElementById("console");
  return Boolean(box && box.dataset.consoleRunning === "true");
}

// The screen box takes the guest screen's proportions (noVNC sizes its canvas to the
// guest's framebuffer): a fixed height left grey bands above and below the scaled screen on
// a narrow phone, and beside it on a wide one.
function followGuestAspect(screen) {
  const fit = () => {
    const canvas = screen.querySelector("canvas");
    if (canvas && canvas.width > 1 && canvas.height > 1) {
      screen.style.aspectRatio = `${canvas.width} / ${canvas.height}`;
      screen.classList.add("sized");
    }
  };
  new MutationObserver(fit).observe(screen, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["width", "height"],
  });
  fit();
}

function connectVnc() {
  const screen = document.getElementById("vnc-screen");
  if (!screen || rfb || !vmRunning()) return;
  setStatus("vnc-status", "connecting…");
  rfb = new RFB(screen, wsUrl(screen.dataset.vncUrl), { wsProtocols: ["binary"] });
  rfb.scaleViewport = true;
  followGuestAspect(screen);
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
  if (action === "fullscreen") document.getElementById("vnc-screen").requestFullscreen();
  if (action === "paste") typeText(document.getElementById("vnc-paste").value);
  if (e.target.dataset && e.target.dataset.serialAction === "connect") connectSerial();
});

// Until the guest writes something the terminal is black: say why, and how to fix it.
function showSerialHint(show) {
  const hint = document.getElementById("serial-hint");
  if (hint) hint.hidden = !show;
}

function connectSerial() {
  const box = document.getElementById("serial-terminal");
  if (!box || !window.Terminal || serial || !vmRunning()) return;
  if (!term) {
    term = new window.Terminal({ convertEol: false, scrollback: 5000 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    // A window made narrower (a phone turned, a resized window) refits the terminal: it
    // kept its first width and pushed the page sideways.
    new ResizeObserver(() => { if (box.clientWidth) fit.fit(); }).observe(box);
    term.onData((d) => { if (serial && serial.readyState === 1) serial.send(new TextEncoder().encode(d)); });
  }
  setStatus("serial-status", "connecting…");
  const ws = new WebSocket(wsUrl(box.dataset.serialUrl));
  serial = ws;
  let written = false;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { setStatus("serial-status", "connected"); showSerialHint(!written); };
  ws.onclose = () => {
    setStatus("serial-status", "disconnected");
    showSerialHint(false);
    if (serial === ws) serial = null;
  };
  ws.onmessage = (m) => {
    if (!written) { written = true; showSerialHint(false); }
    term.write(new Uint8Array(m.data));
  };
}

function connectAll() { connectVnc(); connectSerial(); }

// Shows the part of the tab that fits the VM's state; connects once it runs.
function followState() {
  const box = document.getElementById("console");
  if (!box) return;
  const running = vmRunning();
  box.dataset.consoleRunning = String(running);
  const on = box.querySelector("[data-console-on]");
  const off = box.querySelector("[data-console-off]");
  if (on) on.hidden = !running;
  if (off) off.hidden = running;
  if (running && consoleTabOpen()) connectAll();
  if (!running) {
    if (rfb) rfb.disconnect();
    if (serial) serial.close();
  }
}

document.addEventListener("htmx:afterSettle", followState);
document.addEventListener("kvmm-tab", (e) => { if (e.detail === "console") connectAll(); });
if (location.hash === "#console") connectAll();
