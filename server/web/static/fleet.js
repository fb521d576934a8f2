// Fleet health: every trap, worst first, and its vital signs over time (kept heartbeat samples).
"use strict";
(() => {
  const T = window.Trapline;
  const METRICS = {
    spool_depth: { name: "results", format: (v) => v },
    dropped: { name: "results", format: (v) => v },
    disk_free_bytes: { name: "GB", scale: 1e-9, format: (v) => v.toFixed(1) },
    cpu_temp_c: { name: "°C", format: (v) => v.toFixed(0) },
  };

  async function load() {
    const fleet = await T.api("/stats/fleet");
    T.fillFleet(fleet.devices);
    const attention = fleet.devices.filter((d) => d.health === "offline" || d.health === "stale");
    document.getElementById("fleet-note").textContent = attention.length
      ? `${attention.length} of ${fleet.devices.length} traps need a look` : `all ${fleet.devices.length} traps reporting`;
    const traps = Object.keys(fleet.history).sort();
    for (const [key, spec] of Object.entries(METRICS)) {
      const node = document.getElementById(`h-${key}`);
      const series = traps.map((trap, i) => ({
        name: trap, type: "line", showSymbol: false, color: T.colorOf(trap, i), connectNulls: false,
        data: fleet.history[trap].map((s) => [s.at, s[key] === null ? null : s[key] * (spec.scale || 1)]),
      }));
      node.dataset.points = String(series.reduce((n, s) => n + s.data.length, 0));
      if (!series.length) { T.empty(node, "No heartbeats kept yet"); continue; }
      T.draw(node, {
        legend: { top: 0, type: "scroll" },
        tooltip: { trigger: "axis", valueFormatter: (v) => (v === null || v === undefined ? "–" : `${spec.format(v)} ${spec.name}`) },
        xAxis: { type: "time" }, yAxis: { type: "value", name: spec.name, scale: key === "cpu_temp_c" }, series,
      });
    }
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", () => { load(); setInterval(load, 30000); });
})();
