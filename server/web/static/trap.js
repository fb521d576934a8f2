// One trap: its health now and over time, its activity, its latest pictures.
"use strict";
(() => {
  const T = window.Trapline;

  async function load() {
    const section = document.getElementById("trap");
    const id = section.dataset.device;
    const [d, fleet, activity, latest] = await Promise.all([
      T.api(`/devices/${encodeURIComponent(id)}`), T.api("/stats/fleet"),
      T.api(`/stats/activity?device_id=${encodeURIComponent(id)}`),
      T.api(`/detections?device_id=${encodeURIComponent(id)}&limit=8`),
    ]);
    const rows = [["Status", T.badge(d.health)], ["Last heard", T.ago(d.last_seen_at)],
      ["Model", d.model_name ? `${d.model_name} v${d.model_version}` : "–"], ["Agent", d.agent_version ?? "–"],
      ["Frames processed", d.frames_processed ?? "–"], ["Spool depth", d.spool_depth ?? "–"], ["Dropped", d.dropped ?? "–"],
      ["Disk free", T.bytes(d.disk_free_bytes)], ["CPU temperature", d.cpu_temp_c === null ? "–" : `${d.cpu_temp_c.toFixed(0)} °C`],
      ["Last error", d.last_error ?? "none"]];
    document.getElementById("trap-health").replaceChildren(...rows.flatMap(([k, v]) => [T.el("dt", {}, k), T.el("dd", {}, v)]));

    const days = [...new Set(activity.map((r) => r.day))].sort();
    const keys = [...new Set(activity.map((r) => r.key))];
    if (days.length) {
      T.draw("trap-activity", { legend: { top: 0 }, xAxis: { type: "category", data: days }, yAxis: { type: "value", name: "detections", minInterval: 1 },
        series: keys.map((k, i) => ({ name: k, type: "bar", stack: "all", color: T.colorOf(k, i),
          data: days.map((day) => activity.find((r) => r.day === day && r.key === k)?.detections || 0) })) });
    } else T.empty("trap-activity", "No detections yet");

    const history = fleet.history[id] || [];
    if (history.length) {
      T.draw("trap-health-chart", { legend: { top: 0 }, xAxis: { type: "time" },
        yAxis: [{ type: "value", name: "spool" }, { type: "value", name: "°C", scale: true }],
        series: [{ name: "spool depth", type: "line", showSymbol: false, color: "#3467a8", data: history.map((s) => [s.at, s.spool_depth]) },
          { name: "CPU °C", type: "line", yAxisIndex: 1, showSymbol: false, color: "#c2571a", data: history.map((s) => [s.at, s.cpu_temp_c]) }] });
    } else T.empty("trap-health-chart", "No heartbeats kept yet");

    document.getElementById("latest").replaceChildren(...latest.items.map((f) => {
      const link = T.el("a", { href: `/detections?device_id=${encodeURIComponent(id)}&open=${encodeURIComponent(f.id)}` }, T.shot(f));
      return link;
    }));
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", load);
})();
