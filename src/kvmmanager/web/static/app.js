// KVM Manager page behaviour. No inline scripts anywhere (strict CSP): pages declare what
// they want with data- attributes and htmx, and this file wires it up.
"use strict";

function toast(message, level) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = document.createElement("div");
  el.className = "toast " + (level || "ok");
  el.textContent = message; // guest- or libvirt-provided text: never innerHTML
  box.appendChild(el);
  el.setAttribute("role", level === "error" ? "alert" : "status");
  setTimeout(() => el.remove(), level === "error" || level === "warn" ? 9000 : 4000);
}

document.addEventListener("kvmm-toast", (e) => toast(e.detail.message, e.detail.level));

// Toasts of an answer that redirected here (templating.redirect_with_toasts): shown once,
// then the cookie that carried them is cleared.
function showFlash() {
  const entry = document.cookie.split("; ").find((c) => c.startsWith("kvmm_flash="));
  if (!entry) return;
  document.cookie = "kvmm_flash=; Max-Age=0; Path=/; SameSite=Strict";
  try {
    JSON.parse(decodeURIComponent(entry.slice("kvmm_flash=".length)))
      .forEach((t) => toast(String(t.message), t.level === "warn" || t.level === "error" ? t.level : "ok"));
  } catch (err) { /* a damaged cookie: nothing to show */ }
}
document.addEventListener("DOMContentLoaded", showFlash);
document.addEventListener("htmx:responseError", (e) => {
  const xhr = e.detail.xhr;
  if (!xhr.getResponseHeader("HX-Trigger")) toast("Request failed: " + xhr.status + " " + xhr.statusText, "error");
});
document.addEventListener("htmx:sendError", () => toast("The server did not answer", "error"));

// Confirmation naming the object, for destructive actions: data-confirm="Delete VM 'x'?"
document.addEventListener("htmx:confirm", (e) => {
  let question = e.detail.elt.getAttribute("data-confirm");
  if (!question) return;
  // A batch action names what it acts on: "{selected}" is the ticked rows' names.
  if (question.includes("{selected}")) question = question.replace("{selected}", selectionWords(e.detail.elt.closest("form")));
  e.preventDefault();
  if (window.confirm(question)) e.detail.issueRequest(true);
});

// Live updates: one EventSource per page on the manager's event bus. Elements with
// data-live-vm="host/uuid" are re-fetched (their hx-get) when that VM changes;
// data-live-list re-fetches on added/removed VMs or a resync.
function startLive() {
  const liveEls = document.querySelectorAll("[data-live-vm], [data-live-list], [data-live-kind]");
  if (!liveEls.length || !window.EventSource) return;
  const source = new EventSource("/api/events");
  // htmx drops a trigger while the element's own request is in flight, and a list that
  // is being re-fetched may land after a row's fresher answer and overwrite it. Such an
  // update is remembered by the element's key and replayed once the swap has settled (the
  // element may have been replaced by then, hence keys rather than nodes): a row's update
  // that met a list refresh re-fetches that one row after it, never the whole list again.
  const keyOf = (el) => el.id || el.getAttribute("data-live-vm");
  const stale = new Set();
  const refresh = (el) => {
    const list = el.closest("[data-live-list]");
    const listBusy = list && list !== el && list.classList.contains("htmx-request");
    if ((listBusy || el.classList.contains("htmx-request")) && keyOf(el)) {
      stale.add(keyOf(el));
      el.setAttribute("data-live-pending", ""); // an update waits for this element
      return;
    }
    htmx.trigger(el, "kvmm-refresh");
  };
  document.body.addEventListener("htmx:afterSettle", () => {
    stale.forEach((key) => {
      const els = [document.getElementById(key)].concat(
        Array.from(document.querySelectorAll('[data-live-vm="' + CSS.escape(key) + '"]')));
      els.forEach((el) => {
        const list = el && el.closest("[data-live-list]");
        if (list && list !== el && list.classList.contains("htmx-request")) return;
        if (el && !el.classList.contains("htmx-request")) {
          stale.delete(key);
          el.removeAttribute("data-live-pending");
          htmx.trigger(el, "kvmm-refresh");
        }
      });
    });
  });
  // Whatever changed between this page's render and the stream's (re)connection was
  // never sent to us: catch up once the server has subscribed us (onopen), then mark the
  // page live so tests and users can tell.
  source.onopen = () => {
    document.querySelectorAll("[data-live-list], [data-live-vm], [data-live-kind]").forEach((el) => {
      if (!el.parentElement || !el.parentElement.closest("[data-live-list]")) refresh(el);
    });
    document.documentElement.dataset.live = "open";
  };
  source.onerror = () => { document.documentElement.dataset.live = "reconnecting"; };
  source.onmessage = (msg) => handle(JSON.parse(msg.data));
  ["domain.added", "domain.updated", "domain.removed", "domain.lifecycle", "domain.agent", "domain.snapshot", "domain.config",
   "host.status", "pool.lifecycle", "network.lifecycle", "job.progress", "job.done", "resync",
   "alert.firing", "alert.resolved", "schedule.run", "instance.changed", "instance.heartbeat"]
    .forEach((kind) => source.addEventListener(kind, (msg) => handle(JSON.parse(msg.data))));
  function handle(ev) {
    document.querySelectorAll("[data-live-list]").forEach((el) => {
      const kinds = el.getAttribute("data-live-list").split(" ");
      if (ev.kind === "resync" || kinds.includes(ev.kind)) refresh(el);
    });
    if (ev.kind && ev.kind.startsWith("domain.")) {
      document.querySelectorAll('[data-live-vm="' + CSS.escape(ev.host + "/" + ev.subject) + '"]').forEach(refresh);
    }
    document.querySelectorAll("[data-live-kind]").forEach((el) => {
      if (el.getAttribute("data-live-kind").split(" ").includes(ev.kind)) refresh(el);
    });
    if (ev.kind === "instance.heartbeat") instanceBeat(ev.subject);
  }
}

// The dashboard's manager instances: a heartbeat sets its row's age to 0; an instance not
// listed yet re-fetches the card. The ages move on with the browser's own clock (no request)
// and a row past the card's data-stale-after says "not responding", as the server would.
const beats = new Map(); // row's instance id -> [age when seen, performance.now() then]
function instanceAge(row) {
  const seen = beats.get(row.dataset.instance);
  if (!seen || seen[2] !== row) beats.set(row.dataset.instance, [Number(row.dataset.age) || 0, performance.now(), row]);
  const [age, at] = beats.get(row.dataset.instance);
  return age + (performance.now() - at) / 1000;
}
function instanceBeat(id) {
  const card = document.getElementById("instances");
  if (!card) return;
  const row = card.querySelector('[data-instance="' + CSS.escape(id) + '"]');
  if (!row) { if (!card.classList.contains("htmx-request")) htmx.trigger(card, "kvmm-refresh"); return; }
  beats.set(id, [0, performance.now(), row]);
  showInstanceAges();
}
function showInstanceAges() {
  const card = document.getElementById("instances");
  if (!card) return;
  const staleAfter = Number(card.dataset.staleAfter) || 15;
  card.querySelectorAll("[data-instance]").forEach((row) => {
    const age = Math.floor(instanceAge(row));
    const text = row.querySelector("[data-age-text]");
    if (text) text.textContent = age + " s ago";
    const badge = row.querySelector("[data-alive]");
    if (!badge) return;
    const alive = age <= staleAfter;
    badge.textContent = alive ? "alive" : "not responding";
    badge.classList.toggle("status-connected", alive);
    badge.classList.toggle("status-not-responding", !alive);
  });
}
setInterval(showInstanceAges, 1000);

function wireMenu() {
  const button = document.querySelector(".menu-toggle");
  if (!button) return;
  button.addEventListener("click", () => {
    const nav = document.getElementById("nav");
    const open = nav.classList.toggle("open");
    button.setAttribute("aria-expanded", String(open));
  });
}

// Tabs: <nav class="tabs"><a data-tab="x">, panels <section data-panel="x">.
function wireTabs() {
  document.querySelectorAll("nav.tabs").forEach((tabs) => {
    let shown = null;
    const show = (name) => {
      tabs.querySelectorAll("[data-tab]").forEach((t) => {
        t.setAttribute("aria-selected", String(t.dataset.tab === name));
        // One tab stop for the tab list (the ARIA tabs pattern): arrows move within it.
        t.tabIndex = t.dataset.tab === name ? 0 : -1;
      });
      document.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== name; });
      // What libvirt sends no event for (a snapshot another tool took: no snapshot event
      // exists) is read again when the user opens its tab; never on a timer. The first
      // show is the page load, which loads it anyway.
      if (shown !== null && shown !== name) {
        document.querySelectorAll('[data-panel="' + CSS.escape(name) + '"] [data-refresh-on-show]')
          .forEach((el) => { if (!el.classList.contains("htmx-request")) htmx.trigger(el, "kvmm-refresh"); });
      }
      // The first show (page load) leaves the URL alone: writing "#overview" there made
      // Chromium start the Tab order at that fragment's element, so the first Tab skipped
      // the skip link and the navigation and landed on the VM's power buttons.
      if (shown !== null && history.replaceState) history.replaceState(null, "", "#" + name);
      shown = name;
      document.dispatchEvent(new CustomEvent("kvmm-tab", { detail: name }));
    };
    tabs.querySelectorAll("[data-tab]").forEach((t) => t.addEventListener("click", (e) => { e.preventDefault(); show(t.dataset.tab); }));
    // Left/Right move to the previous/next tab (wrapping), Home/End to the first/last; the
    // tab reached is shown at once (automatic activation: every panel is already loaded).
    tabs.addEventListener("keydown", (e) => {
      const all = Array.from(tabs.querySelectorAll("[data-tab]"));
      const at = all.indexOf(document.activeElement);
      if (at < 0) return;
      const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: all.length - 1 }[e.key];
      if (to === undefined) return;
      e.preventDefault();
      const next = all[(to + all.length) % all.length];
      next.focus();
      show(next.dataset.tab);
    });
    const first = tabs.querySelector("[data-tab]");
    const fromHash = () => {
      const wanted = location.hash.slice(1);
      return tabs.querySelector('[data-tab="' + CSS.escape(wanted) + '"]') ? wanted : null;
    };
    show(fromHash() || (first && first.dataset.tab));
    // Links and back/forward that only change the #tab switch tabs too.
    window.addEventListener("hashchange", () => { const t = fromHash(); if (t) show(t); });
  });
}

// A paged list (the VM list) keeps the page it shows in its filter form's hidden field,
// so the list's live refreshes re-fetch that page: the rows' pager row says which.
document.addEventListener("htmx:afterSwap", (e) => {
  const rows = e.detail.target;
  if (!rows || rows.id !== "vm-rows") return;
  const field = document.querySelector("form.filters [data-list-page]");
  const pager = rows.querySelector("[data-pager]");
  if (field) field.value = pager ? pager.dataset.page : "1";
});

// The create form's ISO list reloads after an upload on its page: pick what was uploaded.
let lastUpload = "";
document.addEventListener("htmx:afterSwap", (e) => {
  const select = e.detail.target;
  if (!select || select.id !== "iso-select" || !lastUpload) return;
  if (Array.from(select.options).some((o) => o.value === lastUpload)) {
    select.value = lastUpload;
    const radio = select.form && select.form.querySelector("input[name=source][value=iso]");
    if (radio) radio.checked = true;
  }
});

// Upload with progress: <form data-upload="PUT url template"> with a file input named "file".
function wireUploads() {
  document.querySelectorAll("form[data-upload]:not([data-wired])").forEach((form) => {
    form.setAttribute("data-wired", "");
    const bar = form.querySelector("progress");
    const status = form.querySelector("[data-upload-status]");
    const cancel = form.querySelector("[data-upload-cancel]");
    let xhr = null;
    const drop = form.querySelector(".dropzone");
    if (drop) {
      drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (e) => {
        e.preventDefault(); drop.classList.remove("over");
        form.querySelector("input[type=file]").files = e.dataTransfer.files;
      });
    }
    if (cancel) cancel.addEventListener("click", () => { if (xhr) xhr.abort(); });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const file = form.querySelector("input[type=file]").files[0];
      if (!file) { toast("Choose a file first", "error"); return; }
      const nameField = form.querySelector("[data-upload-name]");
      const volume = (nameField && nameField.value) || file.name;
      const poolField = form.querySelector("[data-upload-pool]");
      // The server holds the data to the declared format (a qcow2 sent as raw is refused).
      const formatField = form.querySelector("[data-upload-format]");
      const guessed = /\.qcow2$/i.test(file.name) ? "qcow2" : /\.iso$/i.test(file.name) ? "iso" : "raw";
      const format = (formatField && formatField.value) || guessed;
      const url = form.dataset.upload
        .replace("{pool}", encodeURIComponent(poolField ? poolField.value : ""))
        .replace("{name}", encodeURIComponent(volume))
        .replace("{format}", format) + "&size=" + file.size;
      xhr = new XMLHttpRequest();
      xhr.open("PUT", url);
      xhr.setRequestHeader("X-CSRF-Token", document.body.dataset.csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.upload.onprogress = (p) => {
        if (!p.lengthComputable) return;
        bar.max = p.total; bar.value = p.loaded;
        status.textContent = Math.floor((100 * p.loaded) / p.total) + "%";
      };
      const req = xhr;
      req.onreadystatechange = () => {
        if (req.readyState === 4) {
          xhr = null;
          if (req.status >= 200 && req.status < 300) {
            bar.value = bar.max; status.textContent = "100% · done";
            toast("Uploaded " + volume, "ok");
            lastUpload = (poolField ? poolField.value : "") + "/" + volume;
            document.dispatchEvent(new CustomEvent("kvmm-uploaded"));
            document.querySelectorAll("[data-live-kind~='upload.done']").forEach((el) => htmx.trigger(el, "kvmm-refresh"));
          } else if (req.status === 0) {
            status.textContent = "cancelled"; toast("Upload cancelled", "error");
          } else {
            let msg = req.status + " " + req.statusText;
            try { msg = JSON.parse(req.responseText).error.message; } catch (err) { /* not JSON */ }
            status.textContent = "failed: " + msg; toast(msg, "error");
          }
        }
      };
      status.textContent = "0%";
      req.send(file);
    });
  });
}

// Bars: width from data-pct (inline style attributes are forbidden by the CSP).
function paintBars(root) {
  (root || document).querySelectorAll("[data-pct]").forEach((el) => { el.style.width = el.dataset.pct + "%"; });
}
document.addEventListener("htmx:afterSettle", (e) => paintBars(e.detail.elt));

// Download with progress: <form data-download="url template with {name}"> holding an input
// [data-download-name], a <progress> and a [data-download-status]. The server sends the
// size in X-Size (or Content-Length).
async function download(form) {
  const name = form.querySelector("[data-download-name]").value;
  const bar = form.querySelector("progress");
  const status = form.querySelector("[data-download-status]");
  const url = form.dataset.download.replace("{name}", encodeURIComponent(name));
  status.textContent = "0%";
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) {
    let msg = response.status + " " + response.statusText;
    try { msg = (await response.json()).error.message; } catch (err) { /* not JSON */ }
    status.textContent = "failed: " + msg; toast(msg, "error"); return;
  }
  const total = Number(response.headers.get("X-Size") || response.headers.get("Content-Length") || 0);
  const reader = response.body.getReader();
  const parts = []; let done = 0;
  for (;;) {
    const chunk = await reader.read();
    if (chunk.done) break;
    parts.push(chunk.value); done += chunk.value.length;
    if (total) { bar.max = total; bar.value = done; status.textContent = Math.floor((100 * done) / total) + "%"; }
  }
  bar.max = 1; bar.value = 1; status.textContent = "100% · done";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob(parts));
  link.download = name.split("/").pop() || "download";
  document.body.appendChild(link); link.click(); link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}
document.addEventListener("submit", (e) => {
  if (!e.target.matches("form[data-download]")) return;
  e.preventDefault();
  download(e.target).catch((err) => toast("Download failed: " + err, "error"));
});
// Upload forms can arrive later in htmx fragments (the guest-agent tab).
document.addEventListener("htmx:afterSettle", () => wireUploads());

document.addEventListener("DOMContentLoaded", () => {
  paintBars();
  wireMenu();
  wireTabs();
  wireUploads();
  startLive();
});

// Conditional form parts: <form data-when-form> ... <div data-when="metric:cpu_pct mem_pct">
// is shown (and its fields sent) only while the form's field "metric" has one of those
// values. Hidden parts are disabled so the server never sees what the user cannot see.
function applyWhen(form) {
  form.querySelectorAll("[data-when]").forEach((el) => {
    const [name, values] = el.dataset.when.split(":");
    const field = form.elements[name];
    if (!field) return;
    let value = field.value;
    if (field instanceof RadioNodeList || (field.type === "radio")) {
      const checked = form.querySelector('input[name="' + CSS.escape(name) + '"]:checked');
      value = checked ? checked.value : "";
    }
    const show = values.split(" ").includes(value);
    el.hidden = !show;
    el.querySelectorAll("input, select, textarea").forEach((f) => { f.disabled = !show; });
  });
}
function wireWhen(root) {
  (root || document).querySelectorAll("form[data-when-form]").forEach(applyWhen);
}
document.addEventListener("change", (e) => {
  const form = e.target.closest && e.target.closest("form[data-when-form]");
  if (form) applyWhen(form);
});
document.addEventListener("htmx:afterSettle", () => wireWhen());
document.addEventListener("DOMContentLoaded", () => wireWhen());

// Select-all for row checkboxes: <input type=checkbox data-select-all="name"> toggles every
// checkbox of that name in its form; the count of selected rows goes to [data-selected-count].
// Buttons marked data-needs-selection are disabled, with the reason, while nothing is
// picked: no ticked row and no tag in the form's "tag" select.
function countSelected(form, name) {
  const n = form.querySelectorAll('input[type=checkbox][name="' + CSS.escape(name) + '"]:checked').length;
  form.querySelectorAll("[data-selected-count]").forEach((el) => { el.textContent = String(n); });
  const none = n === 0 && !(form.elements.tag && form.elements.tag.value);
  form.querySelectorAll("[data-needs-selection]").forEach((b) => {
    b.disabled = none;
    if (none) b.title = "Select VMs (or a tag) first"; else b.removeAttribute("title");
  });
}
function recountAll() {
  document.querySelectorAll("form [data-select-all]").forEach((all) => countSelected(all.form, all.dataset.selectAll));
}
function selectionWords(form) {
  if (!form) return "the selected VMs";
  const all = form.querySelector("[data-select-all]");
  const boxes = all ? form.querySelectorAll('input[type=checkbox][name="' + CSS.escape(all.dataset.selectAll) + '"]:checked') : [];
  const names = Array.from(boxes).map((b) => "'" + (b.dataset.name || b.value) + "'");
  const tag = form.elements.tag && form.elements.tag.value;
  if (tag) names.push("every VM tagged '" + tag + "'");
  return names.length ? names.join(", ") : "the selected VMs";
}
// Rows come and go with live refreshes (a deleted VM's row leaves): the count and the
// buttons follow the rows that are there.
document.addEventListener("htmx:afterSettle", recountAll);
document.addEventListener("DOMContentLoaded", recountAll);
document.addEventListener("change", (e) => {
  const t = e.target;
  if (!(t instanceof HTMLInputElement) || t.type !== "checkbox" || !t.form) return;
  if (t.dataset.selectAll) {
    t.form.querySelectorAll('input[type=checkbox][name="' + CSS.escape(t.dataset.selectAll) + '"]')
      .forEach((box) => { box.checked = t.checked; });
    countSelected(t.form, t.dataset.selectAll);
    return;
  }
  const all = t.form.querySelector('[data-select-all="' + CSS.escape(t.name) + '"]');
  if (all) countSelected(t.form, t.name);
});
document.addEventListener("change", (e) => {
  // The batch bar's tag picks VMs too.
  if (e.target instanceof HTMLSelectElement && e.target.form && e.target.name === "tag") {
    const all = e.target.form.querySelector("[data-select-all]");
    if (all) countSelected(e.target.form, all.dataset.selectAll);
  }
});

// Live refreshes re-render rows: the user's ticks must survive them. Ticked row boxes in
// the part being swapped are remembered and ticked again in what replaces it.
let keptTicks = [];
document.addEventListener("htmx:beforeSwap", (e) => {
  const target = e.detail.target;
  if (!target || !target.querySelectorAll) return;
  keptTicks = Array.from(target.querySelectorAll("input[type=checkbox][name]:checked"))
    .filter((box) => box.form && box.form.querySelector('[data-select-all="' + CSS.escape(box.name) + '"]'))
    .map((box) => [box.name, box.value]);
});
document.addEventListener("htmx:afterSwap", () => {
  const forms = new Set();
  keptTicks.forEach(([name, value]) => {
    document.querySelectorAll('input[type=checkbox][name="' + CSS.escape(name) + '"]').forEach((box) => {
      if (box.value === value && !box.checked) { box.checked = true; if (box.form) forms.add([box.form, name]); }
    });
  });
  keptTicks = [];
  forms.forEach(([form, name]) => countSelected(form, name));
});

// A live refresh re-renders a tab that holds forms (the VM's Hardware tab after any change
// to the VM): what the user typed or picked there and has not sent yet is put back into
// the new form, field by field, instead of vanishing under their cursor.
const liveSelector = "[data-live-vm], [data-live-list], [data-live-kind]";
const fieldKey = (form, field, n) => (form.getAttribute("hx-post") || form.action) + "|" + field.name + "|" + n;
function editedFields(root) {
  const out = [];
  root.querySelectorAll("form").forEach((form) => {
    const seen = {};
    Array.from(form.elements).forEach((f) => {
      if (!f.name || f.type === "hidden" || f.type === "submit") return;
      seen[f.name] = (seen[f.name] || 0) + 1;
      const key = fieldKey(form, f, seen[f.name]);
      if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) out.push([key, f, "checked", f.checked]);
      } else if (f.tagName === "SELECT") {
        const initial = Array.from(f.options).find((o) => o.defaultSelected) || f.options[0];
        if (f.selectedOptions[0] && f.selectedOptions[0] !== initial) out.push([key, f, "value", f.value]);
      } else if (f.value !== f.defaultValue) {
        out.push([key, f, "value", f.value]);
      }
    });
  });
  return out;
}
let keptEdits = [];
document.addEventListener("htmx:beforeSwap", (e) => {
  const target = e.detail.target;
  const config = e.detail.requestConfig;
  keptEdits = [];
  if (!target || !target.matches || !config || config.verb !== "get" || !target.matches(liveSelector)) return;
  keptEdits = editedFields(target).map(([key, , prop, value]) => [key, prop, value]);
});
document.addEventListener("htmx:afterSwap", (e) => {
  if (!keptEdits.length) return;
  const edits = new Map(keptEdits.map(([key, prop, value]) => [key, [prop, value]]));
  keptEdits = [];
  const root = e.detail.target && e.detail.target.isConnected ? e.detail.target : document;
  root.querySelectorAll("form").forEach((form) => {
    const seen = {};
    Array.from(form.elements).forEach((f) => {
      if (!f.name) return;
      seen[f.name] = (seen[f.name] || 0) + 1;
      const kept = edits.get(fieldKey(form, f, seen[f.name]));
      if (kept) f[kept[0]] = kept[1];
    });
  });
});

// A re-rendered VM row loads its addresses again (a lazy hx-get, "…" until it answers):
// meanwhile it shows the addresses the row had, instead of blinking to "…" on every
// live update. The lazy load still replaces them with its fresh answer.
let keptAddresses = new Map();
document.addEventListener("htmx:beforeSwap", (e) => {
  const target = e.detail.target;
  keptAddresses = new Map();
  if (!target || !target.querySelectorAll) return;
  const rows = Array.from(target.querySelectorAll("tr[id]"));
  if (target.matches("tr[id]")) rows.push(target);
  rows.forEach((row) => {
    const cell = row.querySelector("td[data-label=Addresses]");
    // Still loading after an earlier re-render: what it shows is what it kept then.
    const shown = cell && (cell.querySelector("[hx-get]") || cell);
    if (shown && shown.querySelector(".badge")) keptAddresses.set(row.id, shown.innerHTML);
  });
});
document.addEventListener("htmx:afterSwap", () => {
  keptAddresses.forEach((html, id) => {
    const row = document.getElementById(id);
    const pending = row && row.querySelector("td[data-label=Addresses] [hx-get]");
    if (pending) pending.innerHTML = html;
  });
  keptAddresses = new Map();
});

// Forms marked data-form-errors get a 422 answer carrying the form again with the errors
// next to their fields: swap it in like a success (htmx swaps no 4xx by default).
document.addEventListener("htmx:beforeSwap", (e) => {
  const xhr = e.detail.xhr;
  if (xhr.status === 422 && xhr.responseText && e.detail.elt.closest("[data-form-errors]")) {
    e.detail.shouldSwap = true;
    e.detail.isError = false;
  }
});

// Export page: "Download XML" fetches the chosen VM's definition as a file.
document.addEventListener("click", (e) => {
  const button = e.target.closest && e.target.closest("[data-xml-download]");
  if (!button) return;
  const vm = button.form.elements.vm.value;
  if (vm) window.location.href = "/transfer/xml?vm=" + encodeURIComponent(vm);
});

// A pool picker that follows a host picker: <select data-pools-for="pool-select-id">;
// the pool options carry data-host.
function filterPools(hostSelect) {
  const pools = document.getElementById(hostSelect.dataset.poolsFor);
  if (!pools) return;
  let first = null;
  pools.querySelectorAll("option").forEach((o) => {
    const mine = o.dataset.host === hostSelect.value;
    o.hidden = !mine; o.disabled = !mine;
    if (mine && !first) first = o;
  });
  if (pools.selectedOptions[0] && pools.selectedOptions[0].disabled) pools.value = first ? first.value : "";
}
document.addEventListener("change", (e) => { if (e.target.matches && e.target.matches("[data-pools-for]")) filterPools(e.target); });
document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("[data-pools-for]").forEach(filterPools));

// Upload then job: <form data-upload-post="/api/.../{host}/..." data-job-target="#id"> POSTs
// its file with progress (query: the form's pool, name, new_identity); the 202's job is
// then followed in data-job-target (/transfer/jobs/<id> polls itself until it ends).
document.addEventListener("submit", (e) => {
  const form = e.target;
  if (!form.matches || !form.matches("form[data-upload-post]")) return;
  e.preventDefault();
  const file = form.elements.file.files[0];
  if (!file) { toast("Choose a file first", "error"); return; }
  const bar = form.querySelector("progress");
  const status = form.querySelector("[data-upload-status]");
  const params = new URLSearchParams();
  params.set("pool", form.elements.pool.value);
  if (form.elements.name.value) params.set("name", form.elements.name.value);
  if (form.elements.new_identity.checked) params.set("new_identity", "true");
  const url = form.dataset.uploadPost.replace("{host}", encodeURIComponent(form.elements.host.value)) + "?" + params;
  const xhr = new XMLHttpRequest();
  const cancel = form.querySelector("[data-upload-cancel]");
  if (cancel) cancel.onclick = () => xhr.abort();
  xhr.open("POST", url);
  xhr.setRequestHeader("X-CSRF-Token", document.body.dataset.csrf);
  xhr.setRequestHeader("Content-Type", "application/gzip");
  xhr.upload.onprogress = (p) => {
    if (!p.lengthComputable) return;
    bar.max = p.total; bar.value = p.loaded;
    status.textContent = Math.floor((100 * p.loaded) / p.total) + "%";
  };
  xhr.onreadystatechange = () => {
    if (xhr.readyState !== 4) return;
    if (xhr.status === 202) {
      bar.value = bar.max; status.textContent = "100% · uploaded, importing";
      const job = JSON.parse(xhr.responseText).job_id;
      htmx.ajax("GET", "/transfer/jobs/" + encodeURIComponent(job), { target: form.dataset.jobTarget, swap: "innerHTML" });
    } else if (xhr.status === 0) {
      status.textContent = "cancelled"; toast("Upload cancelled", "error");
    } else {
      let msg = xhr.status + " " + xhr.statusText;
      try { msg = JSON.parse(xhr.responseText).error.message; } catch (err) { /* not JSON */ }
      status.textContent = "failed: " + msg; toast(msg, "error");
    }
  };
  status.textContent = "0%";
  xhr.send(file);
});
