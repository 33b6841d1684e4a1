// The create-VM page's steps: one step shown at a time, every field in the one form (so
// Back and Next lose nothing), the review step lists what will be created, a server
// refusal opens the step of the field it names. The OS step's pick copies osinfo-db's
// recommendations into the later steps' fields.
(function () {
  function steps(form) { return Array.from(form.querySelectorAll("[data-step]")); }

  function show(form, n) {
    steps(form).forEach((s) => { s.hidden = s.dataset.step !== String(n); });
    form.querySelectorAll(".steps [data-step-go]").forEach((b) => {
      b.setAttribute("aria-current", b.dataset.stepGo === String(n) ? "step" : "false");
    });
    if (String(n) === "4") review(form);
    const first = form.querySelector('[data-step="' + n + '"] h2');
    if (first) { first.tabIndex = -1; first.focus({ preventScroll: false }); }
  }

  function text(form, name) {
    const el = form.elements[name];
    if (!el) return "";
    if (el.type === "checkbox") return el.checked ? "yes" : "no";
    if (el.tagName === "SELECT") return el.selectedOptions[0] ? el.selectedOptions[0].textContent : "";
    if (el instanceof RadioNodeList) {
      const picked = Array.from(el).find((r) => r.checked);
      return picked ? picked.parentElement.textContent.trim() : "";
    }
    return el.value;
  }

  // The chosen source in words: its label, the volume picked for it, and for a cloud
  // image how its disk is made and whether a seed goes with it.
  function source(form) {
    const picked = Array.from(form.querySelectorAll("input[name=source]")).find((r) => r.checked);
    if (!picked) return "not chosen";
    let out = picked.parentElement.textContent.trim();
    const vol = form.querySelector('[data-source-of="' + picked.value + '"]');
    if (vol) out += ": " + (vol.selectedOptions[0] ? vol.value : "(no volume to pick)");
    if (picked.value === "cloud") {
      const mode = form.querySelector("input[name=cloud_mode]:checked");
      out += mode && mode.value === "full" ? ", full clone" : ", copy-on-write overlay";
      out += form.elements.cloud_seed.checked ? ", with a cloud-init seed" : ", no cloud-init seed";
    }
    return out;
  }

  function review(form) {
    const dl = form.querySelector("#review");
    if (!dl) return;
    const os = form.querySelector("#os-picked");
    const rows = [
      ["Name", text(form, "name") || "(none yet)"],
      ["Host", text(form, "host")],
      ["Operating system", os ? os.textContent : "not chosen"],
      ["vCPUs", text(form, "vcpus")],
      ["Memory", text(form, "memory_mib") + " " + text(form, "memory_unit")],
      ["Firmware", text(form, "firmware")],
      ["Install source", source(form)],
      ["New disk", text(form, "disk_gib") + " " + text(form, "disk_unit") + " in " + text(form, "disk_pool") + ", " + text(form, "disk_bus") + (diskSpace(form) ? " (" + diskSpace(form) + ")" : "")],
      ["Network", text(form, "network") + ", " + text(form, "nic_model")],
    ];
    dl.replaceChildren();
    rows.forEach(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v;
      dl.append(dt, dd);
    });
  }

  // The new disk against the chosen pool's free space (data-free, bytes): a warning
  // before submit. qcow2 grows as the guest writes, so a larger disk is allowed.
  const UNIT = { MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40 };
  function human(bytes) {
    const units = ["MiB", "GiB", "TiB"];
    let i = 0, n = bytes / UNIT.MiB;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return n.toFixed(1) + " " + units[i];
  }
  function diskSpace(form) {
    const size = parseFloat(form.elements.disk_gib && form.elements.disk_gib.value) || 0;
    const unit = form.elements.disk_unit ? form.elements.disk_unit.value : "GiB";
    const pool = form.elements.disk_pool && form.elements.disk_pool.selectedOptions[0];
    if (!pool || pool.dataset.free === undefined || size <= 0) return "";
    const bytes = size * (UNIT[unit] || UNIT.GiB), free = Number(pool.dataset.free);
    if (bytes <= free) return "";
    return "larger than the " + human(free) + " free in pool " + pool.value +
      ": the pool fills up before the disk does";
  }
  function showDiskSpace(form) {
    const note = form.querySelector("#disk-space");
    if (!note) return;
    const problem = diskSpace(form);
    note.textContent = problem ? "The new disk is " + problem + "." : "";
    note.hidden = !problem;
  }

  // Fields of one source (data-for-source="cloud") show only while it is the chosen one.
  function sourceFields(form) {
    const picked = form.querySelector("input[name=source]:checked");
    form.querySelectorAll("[data-for-source]").forEach((el) => {
      el.hidden = !picked || el.dataset.forSource !== picked.value;
    });
  }

  function wire(form) {
    if (!form || form.dataset.stepsWired) return;
    form.dataset.stepsWired = "1";
    sourceFields(form);
    // The first error beside a field (a form-wide one stays above the steps).
    const error = form.querySelector("[data-step] .alert.error");
    show(form, error ? error.closest("[data-step]").dataset.step : 1);
    if (error) error.scrollIntoView({ block: "center" });
    showDiskSpace(form);
    const recheck = () => {
      showDiskSpace(form);
      const name = form.elements.namedItem("name");
      if (name && name.value && window.htmx) htmx.trigger(name, "kvmm-recheck");
    };
    ["disk_gib", "disk_unit", "disk_pool", "source"].forEach((field) => {
      const el = form.elements[field];
      if (!el) return;
      (el instanceof RadioNodeList ? Array.from(el) : [el]).forEach((e) => {
        e.addEventListener("input", recheck);
        e.addEventListener("change", recheck);
      });
    });
  }

  // "Next" leaves a step only when its fields are valid (the form is novalidate, so the
  // browser shows no bubble): the first invalid field gets its message beside it, in the
  // same place a server refusal would put it (id err-<name>).
  function stepInvalid(section) {
    const bad = Array.from(section.querySelectorAll("input, select, textarea"))
      .find((el) => el.name && !el.disabled && !el.checkValidity());
    if (!bad) return false;
    let note = section.querySelector("#err-" + bad.name);
    if (!note) {
      note = document.createElement("span");
      note.className = "alert error small";
      note.id = "err-" + bad.name;
      note.setAttribute("role", "alert");
      (bad.closest("label") || bad).after(note);
    }
    note.textContent = bad.value ? bad.validationMessage : "A value is required.";
    bad.setAttribute("aria-invalid", "true");
    bad.focus();
    return true;
  }

  document.addEventListener("click", (e) => {
    const go = e.target.closest("[data-step-go]");
    const form = go && go.closest("form#new-vm");
    if (!form) return;
    e.preventDefault();
    const here = go.closest("[data-step]");
    if (here && Number(go.dataset.stepGo) > Number(here.dataset.step) && stepInvalid(here)) return;
    show(form, go.dataset.stepGo);
  });

  // OS detection: a picked ISO's volume descriptor is matched against osinfo-db on the
  // server; a match replaces #os-defaults (out of band) unless the OS was chosen by hand
  // (keep=<its short id>), which the answer then only mentions.
  function detect(form) {
    const iso = form.elements.iso;
    const target = form.querySelector("#iso-detect");
    if (!iso || !target || !window.htmx) return;
    if (!iso.value) { target.replaceChildren(); return; }
    const q = new URLSearchParams({ host: form.elements.host.value, iso: iso.value, keep: form.dataset.osByHand || "" });
    htmx.ajax("GET", "/vms/new/iso-os?" + q.toString(), { target: target, swap: "innerHTML" });
  }
  document.addEventListener("change", (e) => {
    const form = e.target.closest && e.target.closest("form#new-vm");
    if (!form) return;
    if (e.target.name === "iso" || (e.target.name === "source" && e.target.value === "iso")) detect(form);
  });
  document.addEventListener("click", (e) => {
    const option = e.target.closest && e.target.closest("[data-os-option]");
    const form = option && option.closest("form#new-vm");
    if (form) form.dataset.osByHand = option.dataset.osOption;
  });

  // The OS step: a picked OS's values go into the later steps' fields.
  document.addEventListener("htmx:afterSettle", (e) => {
    const form = document.querySelector("form#new-vm");
    wire(form);
    const elt = e.detail.elt;
    // An upload picked its ISO in the reloaded select: detect its OS too.
    if (form && elt.id === "iso-select") detect(form);
    const detected = elt.id === "iso-detect" && elt.querySelector("[data-iso-detect=picked]");
    const picked = detected ? form.querySelector("#os-defaults [data-os-defaults]")
      : elt.querySelector && elt.querySelector("[data-os-defaults]");
    if (!form || !picked) return;
    const fields = ["memory_unit", "memory_mib", "vcpus", "disk_unit", "disk_gib", "disk_bus", "nic_model", "firmware", "os"];
    fields.forEach((name) => {
      const el = form.elements[name];
      const value = picked.dataset[name];
      if (!el || value === undefined) return;
      if (el.tagName === "SELECT" && !Array.from(el.options).some((o) => o.value === value)) return;
      el.value = value;
    });
    showDiskSpace(form);
  });
  // "Upload an ISO" is done in the upload form beside the steps: take the user there.
  document.addEventListener("change", (e) => {
    const r = e.target;
    const form = r.closest && r.closest("form#new-vm");
    if (r.name === "source" && form) sourceFields(form);
    if (r.name !== "source" || r.value !== "upload" || !form) return;
    const file = document.querySelector("#iso-upload input[type=file]");
    if (file) { file.scrollIntoView({ block: "center" }); file.focus(); }
  });
  document.addEventListener("DOMContentLoaded", () => wire(document.querySelector("form#new-vm")));
})();
