// Trapline dashboard, shared by every page: the API, small DOM helpers, the range picker, the
// fleet table, chart defaults. Charts use the vendored ECharts (static/vendor), so nothing here
// needs the internet. Each page's own script (overview.js, fleet.js, ...) uses window.Trapline.
"use strict";
(() => {
  const api = (path) => fetch(`/api/v1${path}`, { credentials: "same-origin" }).then((r) => {
    if (r.status === 401) { window.location = "/login"; throw new Error("not logged in"); }
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  });
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  };
  const ago = (iso) => {
    if (!iso) return "never";
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (s < 90) return `${Math.max(0, Math.round(s))} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} days ago`;
  };
  const bytes = (n) => {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0; let v = n;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
    return `${v.toFixed(v < 10 && i ? 1 : 0)} ${units[i]}`;
  };
  const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits));
  const day = (date) => date.toISOString().slice(0, 10);

  // one colour per thing, everywhere
  const COLORS = { animal: "#2f7d4a", person: "#c2571a", vehicle: "#3467a8", day: "#e0a526", night: "#3b3f8f",
    online: "#2f7d4a", stale: "#c98a00", offline: "#b3261e", stopped: "#6b6b6b", unknown: "#9a9a9a" };
  const PALETTE = ["#2f7d4a", "#3467a8", "#c2571a", "#8a4fa3", "#1b9aaa", "#b3261e", "#6b8e23", "#d4a017"];
  const colorOf = (key, i) => COLORS[key] || PALETTE[i % PALETTE.length];

  // Charts: created once per element, resized with the window, redrawn with new options.
  const charts = new Map();
  const chart = (id) => {
    const node = typeof id === "string" ? document.getElementById(id) : id;
    if (!node || !window.echarts) return null;
    if (!charts.has(node)) charts.set(node, window.echarts.init(node, null, { renderer: "canvas" }));
    return charts.get(node);
  };
  window.addEventListener("resize", () => charts.forEach((c) => c.resize()));
  const base = { textStyle: { fontFamily: "system-ui, sans-serif" }, animation: false,
    grid: { left: 56, right: 20, top: 36, bottom: 40, containLabel: false },
    tooltip: { trigger: "axis" }, legend: { icon: "roundRect", itemWidth: 12, itemHeight: 8 } };
  const draw = (id, option) => {
    const c = chart(id);
    if (!c) return null;
    c.setOption({ ...base, ...option, legend: option.legend ? { ...base.legend, ...option.legend } : undefined }, true);
    c.getDom().dataset.drawn = "1";
    return c;
  };
  const empty = (id, message) => draw(id, { title: { text: message, left: "center", top: "middle",
    textStyle: { color: "#888", fontSize: 14, fontWeight: "normal" } }, xAxis: { show: false }, yAxis: { show: false }, series: [] });

  // The range picker writes ?since=&until= into the URL, so a page can be linked and reloaded.
  const range = () => {
    const q = new URLSearchParams(window.location.search);
    return { since: q.get("since"), until: q.get("until") };
  };
  const rangeQuery = () => {
    const r = range(); const q = new URLSearchParams();
    if (r.since) q.set("since", `${r.since}T00:00:00Z`);
    if (r.until) q.set("until", `${r.until}T23:59:59Z`);
    return q;
  };
  const setupRange = (onChange) => {
    const form = document.getElementById("range");
    if (!form) return;
    const r = range();
    form.elements.from.value = r.since || ""; form.elements.to.value = r.until || "";
    const apply = (since, until) => {
      const q = new URLSearchParams(window.location.search);
      if (since) q.set("since", since); else q.delete("since");
      if (until) q.set("until", until); else q.delete("until");
      window.history.replaceState(null, "", `${window.location.pathname}${q.toString() ? `?${q}` : ""}`);
      form.elements.from.value = since || ""; form.elements.to.value = until || "";
      form.querySelectorAll("[data-days]").forEach((b) => b.classList.remove("on"));
      onChange();
    };
    form.querySelectorAll("[data-days]").forEach((button) => button.addEventListener("click", () => {
      const days = Number(button.dataset.days);
      if (!days) { apply(null, null); button.classList.add("on"); return; }
      const end = new Date(); const start = new Date(end.getTime() - (days - 1) * 86400000);
      apply(day(start), day(end)); button.classList.add("on");
    }));
    form.addEventListener("submit", (e) => { e.preventDefault(); apply(form.elements.from.value, form.elements.to.value); });
  };

  const badge = (health) => el("span", { class: `badge ${health}` }, health);
  const fillFleet = (devices) => {
    const body = document.querySelector("#fleet tbody");
    if (!body) return;
    body.replaceChildren(...devices.map((d) => el("tr", { "data-device": d.id, "data-health": d.health },
      el("td", {}, el("a", { href: `/traps/${encodeURIComponent(d.id)}` }, d.id), d.name ? el("span", { class: "sub" }, d.name) : null),
      el("td", {}, badge(d.health)),
      el("td", { title: d.last_seen_at || "" }, ago(d.last_seen_at)),
      el("td", {}, d.model_name ? `${d.model_name} v${d.model_version}` : "–"),
      el("td", { class: "num" }, d.spool_depth ?? "–"),
      el("td", { class: `num${d.dropped ? " warn" : ""}` }, d.dropped ?? "–"),
      el("td", { class: "num" }, bytes(d.disk_free_bytes)),
      el("td", { class: "num" }, d.cpu_temp_c === null || d.cpu_temp_c === undefined ? "–" : `${d.cpu_temp_c.toFixed(0)} °C`),
      el("td", { class: "error-cell" }, d.last_error || ""))));
  };

  // A picture with its boxes, boxes placed in % of the picture so they fit at any size.
  const boxes = (frame) => frame.detections.map((d) => {
    const [x, y, w, h] = d.bbox;
    const box = el("div", { class: `box ${d.category}`, style: `left:${x * 100}%;top:${y * 100}%;width:${w * 100}%;height:${h * 100}%` });
    box.append(el("span", {}, `${d.category} ${Math.round(d.conf * 100)}%`));
    return box;
  });
  const shot = (frame, kind = "thumbnail") => {
    const div = el("div", { class: "shot", "data-frame": frame.id, tabindex: "-1" });
    const sha = kind === "thumbnail" ? (frame.media.thumbnail || frame.media.frame) : (frame.media.frame || frame.media.thumbnail);
    // in the grid the tile has the frame's shape; full size, the picture itself sets it
    if (kind === "thumbnail") div.style.aspectRatio = `${frame.width} / ${frame.height}`;
    if (sha) div.append(el("img", { src: `/api/v1/media/${sha}`, alt: `${frame.device_id} ${frame.image_file}`, loading: "lazy" }));
    else div.append(el("div", { class: "placeholder" }, "picture not uploaded"));
    div.append(...boxes(frame));
    div.append(el("div", { class: "caption" }, `${frame.device_id} · ${new Date(frame.captured_at).toLocaleString()}${frame.night ? " · night" : ""}`));
    return div;
  };

  window.Trapline = { api, el, ago, bytes, fmt, day, COLORS, colorOf, chart, draw, empty, range, rangeQuery,
    setupRange, fillFleet, badge, shot };

  document.addEventListener("DOMContentLoaded", () => {
    const login = document.getElementById("login-form");
    if (login) {
      login.addEventListener("submit", async (event) => {
        event.preventDefault();
        const r = await fetch("/api/v1/session", { method: "POST", body: new FormData(login), credentials: "same-origin" });
        if (r.ok) window.location = "/"; else document.getElementById("login-error").hidden = false;
      });
    }
    document.getElementById("logout")?.addEventListener("click", async (e) => {
      e.preventDefault(); await fetch("/api/v1/session", { method: "DELETE" }); window.location = "/login";
    });
  });
})();
