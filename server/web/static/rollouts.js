// Rollout actions on /rollouts: pause, resume, roll back (admins), then reload the page.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const { action, rollout } = button.dataset;
  if (action === "rollback" && !window.confirm(`Send every trap of rollout ${rollout} back to its earlier release?`)) return;
  const message = document.getElementById("rollout-message");
  const response = await fetch(`/api/v1/rollouts/${rollout}/${action}`, {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: "{}",
  });
  if (response.ok) { window.location.reload(); return; }
  const detail = await response.json().catch(() => ({}));
  message.textContent = `${action} failed: ${detail.detail || response.status}`;
});
