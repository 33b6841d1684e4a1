// Performance graphs of a VM (the Performance tab): uPlot charts filled from the metrics
// history API. "Live" (the last 10 minutes) is kept current by the metrics SSE stream; the
// other buttons (1 h ... 30 d) load a named range of the history (`?range=`), once. The fragment arrives through htmx
// (which runs no scripts in it), so this file, loaded by the page, finds any
// `[data-kvmm-graphs]` element after each swap and owns it until it leaves the DOM.
(() => {
  "use strict";

  const GRAPHS = {
    cpu: { series: [["cpu_pct", "CPU %"]], unit: "pct" },
    mem: { series: [["mem_bytes", "used"]], unit: "bytes" },
    disk: { series: [["disk_rd_bps", "read"], ["disk_wr_bps", "write"]], unit: "bytes/s" },
    iops: { series: [["disk_rd_iops", "read"], ["disk_wr_iops", "write"]], unit: "ops/s" },
    net: { series: [["net_rx_bps", "receive"], ["net_tx_bps", "transmit"]], unit: "bytes/s" },
  };
  const COLORS = ["#2f7ed8", "#d35400"];
  const LIVE_SECONDS = 600;

  // Every figure carries its unit, on the axis as in the legend: a rate says "/s".
  function human(v, unit) {
    if (v == null) return "–";
    if (unit === "pct") return v.toFixed(1) + " %";
    if (unit === "ops/s") return v.toFixed(v < 10 ? 1 : 0) + " ops/s";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    const per = unit === "bytes/s" ? "/s" : "";
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i] + per;
  }

  // uPlot's legend shows the values under the cursor and "--" without one: away from the
  // graph it shows the newest sample instead, so the legend reads without hovering.
  function newest(u) {
    const ts = u.data[0] || [];
    for (let i = ts.length - 1; i >= 0; i--) {
      if (u.data.slice(1).some((col) => col[i] != null)) return i;
    }
    return null;
  }
  function legendAtNewest(u) {
    if (u.cursor.idx == null) {
      const idx = newest(u);
      if (idx != null) u.setLegend({ idx });
    }
  }

  // The y axis is as wide as its widest label ("953.7 MiB") plus its ticks and gap: a fixed
  // width cut the first digits of long labels off at the canvas's left edge.
  const AXIS_MARGIN = 4; // CSS px of air left of the widest label
  function axisWidth(u, values, axisIdx, cycle) {
    const axis = u.axes[axisIdx];
    if (cycle > 1 && axis._size) return axis._size; // uPlot re-asks while it settles
    u.ctx.font = axis.font[0];
    const px = Math.max(0, ...(values || []).map((v) => u.ctx.measureText(String(v)).width));
    return Math.ceil(px / uPlot.pxRatio + axis.ticks.size + axis.gap + AXIS_MARGIN);
  }

  function resolution(step) {
    if (step < 60) return `every ${step} s`;
    if (step < 3600) return `${step / 60}-minute means`;
    return "hourly means";
  }

  class VmGraphs {
    constructor(root) {
      this.root = root;
      this.range = "live";
      this.data = null; // columnar {ts: [...], field: [...]}
      this.plots = {};
      this.source = null;
      this.status = root.querySelector("[data-graph-status]");
      root.addEventListener("click", (e) => {
        const btn = e.target.closest("[data-graph-range]");
        if (!btn) return;
        for (const b of root.querySelectorAll("[data-graph-range]")) {
          const on = b === btn;
          b.classList.toggle("primary", on);
          b.setAttribute("aria-pressed", String(on));
        }
        this.range = btn.dataset.graphRange;
        this.load();
      });
      this.resizer = new ResizeObserver(() => this.resize());
      this.resizer.observe(root);
      this.load();
    }

    setStatus(text) { if (this.status) this.status.textContent = text; }

    width() { return Math.max(240, (this.root.querySelector("[data-graph]")?.clientWidth || 480) - 8); }

    async load() {
      this.stopLive();
      this.setStatus("loading…");
      try {
        const live = this.range === "live";
        const query = live ? `last=${LIVE_SECONDS}` : `range=${encodeURIComponent(this.range)}`;
        const wanted = this.range;
        const r = await fetch(`${this.root.dataset.historyUrl}?${query}`, { credentials: "same-origin" });
        if (!r.ok) throw new Error((await r.json()).error?.message || r.statusText);
        const body = await r.json();
        if (wanted !== this.range) return; // another button was pressed meanwhile
        this.data = body.series;
        this.draw();
        if (live) this.startLive();
        else this.setStatus(body.series.ts.length ? resolution(body.step) : "no data in this range yet");
      } catch (err) {
        this.setStatus("no data: " + err.message);
      }
    }

    draw() {
      for (const p of Object.values(this.plots)) p.destroy();
      this.plots = {};
      for (const [name, spec] of Object.entries(GRAPHS)) {
        const el = this.root.querySelector(`[data-graph="${name}"]`);
        if (!el) continue;
        const opts = {
          width: this.width(),
          height: 160,
          scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, spec.unit.startsWith("bytes") ? 1024 : 1)] } },
          axes: [{}, { values: (u, ticks) => ticks.map((t) => human(t, spec.unit)), size: axisWidth }],
          hooks: { ready: [legendAtNewest], setData: [legendAtNewest], setCursor: [legendAtNewest] },
          series: [{}, ...spec.series.map(([, label], i) => ({
            label, stroke: COLORS[i], width: 1.5, spanGaps: false,
            value: (u, v) => human(v, spec.unit),
          }))],
        };
        this.plots[name] = new uPlot(opts, this.columns(spec), el);
      }
    }

    columns(spec) { return [this.data.ts, ...spec.series.map(([f]) => this.data[f])]; }

    startLive() {
      if (!window.EventSource) return;
      this.source = new EventSource(this.root.dataset.streamUrl);
      this.source.addEventListener("sample", (e) => this.append(JSON.parse(e.data)));
      this.source.addEventListener("gone", () => { this.setStatus("the VM is gone"); this.stopLive(); });
      this.source.onerror = () => this.setStatus("live stream interrupted, retrying…");
      this.source.onopen = () => this.setStatus("live");
    }

    stopLive() { if (this.source) { this.source.close(); this.source = null; } }

    append(sample) {
      if (!this.root.isConnected) { this.destroy(); return; }
      const d = this.data;
      if (!d || (d.ts.length && sample.ts <= d.ts[d.ts.length - 1])) return;
      d.ts.push(sample.ts);
      for (const spec of Object.values(GRAPHS)) for (const [f] of spec.series) d[f].push(sample[f]);
      const cutoff = sample.ts - LIVE_SECONDS;
      let drop = 0;
      while (drop < d.ts.length && d.ts[drop] < cutoff) drop++;
      if (drop) for (const k of Object.keys(d)) d[k].splice(0, drop);
      for (const [name, spec] of Object.entries(GRAPHS)) this.plots[name]?.setData(this.columns(spec));
    }

    resize() {
      if (!this.root.isConnected) { this.destroy(); return; }
      const w = this.width();
      for (const p of Object.values(this.plots)) p.setSize({ width: w, height: 160 });
    }

    destroy() {
      this.stopLive();
      this.resizer.disconnect();
      for (const p of Object.values(this.plots)) p.destroy();
      this.plots = {};
    }
  }

  const live = new WeakMap();
  function scan(scope) {
    if (typeof uPlot === "undefined") return;
    const root = scope || document;
    // htmx:load's target is each new element itself (the Performance tab swaps in the
    // [data-kvmm-graphs] card as its innerHTML): it counts as well as its descendants.
    const found = Array.from(root.querySelectorAll("[data-kvmm-graphs]"));
    if (root.matches && root.matches("[data-kvmm-graphs]")) found.unshift(root);
    for (const el of found) {
      if (!live.has(el)) live.set(el, new VmGraphs(el));
    }
  }
  document.addEventListener("htmx:load", (e) => scan(e.target));
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => scan(document));
  else scan(document);
  // A swapped-out tab takes its graphs along: stop their streams.
  document.addEventListener("htmx:beforeCleanupElement", (e) => {
    const g = live.get(e.target);
    if (g) { g.destroy(); live.delete(e.target); }
  });
})();
