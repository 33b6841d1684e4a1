// A VM deleted while its page is open (here or elsewhere): every tab says so and offers no
// action on it. Found by a tab's live refresh (the Overview answers vms/_gone.html, the
// Hardware and Snapshots tabs vms/_gone_tab.html, marked data-vm-gone, on domain.removed
// or on the stream's catch-up) or by any other tab's request answering 404. The tabs' own refreshes are stopped from then on: each would 404 again.
(() => {
  const notice = document.querySelector("[data-vm-gone-notice]");
  if (!notice) return;
  let gone = false;
  const disableAll = () => {
    document.querySelectorAll("[data-panel] :is(button, input, select, textarea)").forEach((el) => {
      el.disabled = true;
      el.setAttribute("aria-describedby", "vm-gone-notice");
    });
  };
  const markGone = () => {
    if (!gone) {
      gone = true;
      notice.hidden = false;
      document.documentElement.dataset.vmGone = "true";
      // Its Delete card and the shutdown hint act on the VM only: nothing left to say there.
      document.querySelectorAll("[data-vm-only]").forEach((el) => el.remove());
    }
    disableAll(); // again after any swap: content that arrived late is disabled too
  };
  // Another user's VM (the server refuses its changes: "vm 'x' belongs to 'y'"): every
  // control that would change it, in whichever tab and whenever a tab (re)loads, is
  // disabled with the page's notice as its reason.
  const notYours = document.querySelector("[data-vm-not-yours]");
  const disableChanges = () => {
    document.querySelectorAll(
      "[data-panel] [hx-post], [data-panel] form[hx-post] :is(button, input, select, textarea)"
    ).forEach((el) => {
      el.disabled = true;
      el.setAttribute("aria-describedby", notYours.id);
    });
  };
  if (notYours) disableChanges();
  document.body.addEventListener("htmx:afterSettle", () => {
    if (gone || document.querySelector("[data-panel] [data-vm-gone]")) markGone();
    else if (notYours) disableChanges();
  });
  document.body.addEventListener("htmx:responseError", (e) => {
    if (e.detail.xhr.status === 404 && e.detail.elt.closest("[data-panel]")) markGone();
  });
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    if (gone && e.detail.elt.closest("[data-panel]")) e.preventDefault();
  });
})();
