// A shutdown request (ACPI power button, or the guest agent) needs the guest's help: a
// guest without an ACPI handler or agent ignores it, and the VM silently keeps running.
// After a shutdown request from the VM page, this waits the page's grace time; if the
// VM's state badge still says it runs, it shows #shutdown-hint (why, and Force off). A
// state change (the live badge) or a Force off hides it again.
(() => {
  "use strict";
  const RUNNING = ["running", "blocked"];
  let timer = null;

  const hint = () => document.getElementById("shutdown-hint");
  const running = () => {
    const badge = document.getElementById("vm-state");
    return Boolean(badge && RUNNING.includes(badge.dataset.vmState)); // libvirt's name
  };

  const pathOf = (e) => (e.detail.pathInfo && e.detail.pathInfo.requestPath) || "";
  // Started when the request leaves: the overview is often redrawn by a live update while
  // it is under way, and the detached button's later events never reach the document.
  document.addEventListener("htmx:beforeRequest", (e) => {
    const box = hint();
    const path = pathOf(e);
    if (!box) return;
    if (/\/actions\/shutdown$/.test(path)) {
      clearTimeout(timer);
      box.hidden = true;
      const grace = Number(box.dataset.graceSeconds) || 60;
      timer = setTimeout(() => { if (running()) box.hidden = false; }, grace * 1000);
    } else if (/\/actions\/(destroy|start|reset)$/.test(path)) {
      clearTimeout(timer);
      box.hidden = true;
    }
  });
  // A refused request (its error toast says why) was no request the guest could ignore.
  document.addEventListener("htmx:responseError", (e) => {
    if (/\/actions\/shutdown$/.test(pathOf(e))) clearTimeout(timer);
  });
  // The overview is redrawn when the VM's state changes: a VM that stopped needs no hint.
  document.addEventListener("htmx:load", () => {
    const box = hint();
    if (box && !box.hidden && !running()) box.hidden = true;
  });
})();
