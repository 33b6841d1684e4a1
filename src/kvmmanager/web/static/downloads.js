// Buttons with data-post-download="<url>": POST (with the CSRF header) and save the answer
// as a file. For downloads that change something (a SPICE .vv sets a one-time password).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-post-download]");
  if (!button) return;
  event.preventDefault();
  const status = button.parentElement.querySelector("[data-download-status]");
  const response = await fetch(button.dataset.postDownload, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": document.body.dataset.csrf },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    if (status) status.textContent = body?.error?.message || `failed (${response.status})`;
    return;
  }
  const match = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = match ? match[1] : "download";
  link.click();
  URL.revokeObjectURL(link.href);
  if (status) status.textContent = "downloaded";
});
