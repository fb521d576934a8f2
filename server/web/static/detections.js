// Detections browser: filters (kept in the URL), pages of pictures, a full-size viewer with the
// boxes, and the keyboard: ← → move, Enter opens, Esc closes, PgUp/PgDn change page.
"use strict";
(() => {
  const T = window.Trapline;
  const PAGE = 24;
  let items = [];
  let selected = -1;
  const cursors = [null]; // cursors[i] fetches page i; the stack lets "Newer" go back
  let pageIndex = 0;
  let nextCursor = null;

  const form = () => document.getElementById("filters");
  const query = () => {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form()).entries()) {
      if (v === "" || (k === "min_conf" && Number(v) === 0)) continue;
      if (k === "from") q.set("since", `${v}T00:00:00Z`);
      else if (k === "to") q.set("until", `${v}T23:59:59Z`);
      else q.set(k, v);
    }
    return q;
  };
  const syncUrl = () => {
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form()).entries()) if (v !== "" && !(k === "min_conf" && Number(v) === 0)) q.set(k, v);
    window.history.replaceState(null, "", `/detections${q.toString() ? `?${q}` : ""}`);
  };

  function select(index, scroll = true) {
    const shots = document.querySelectorAll("#latest .shot");
    if (!shots.length) return;
    selected = Math.max(0, Math.min(index, shots.length - 1));
    shots.forEach((s, i) => s.classList.toggle("selected", i === selected));
    if (scroll) shots[selected].scrollIntoView({ block: "nearest" });
  }

  async function load(index) {
    const q = query(); q.set("limit", String(PAGE));
    if (cursors[index]) q.set("cursor", cursors[index]);
    const page = await T.api(`/detections?${q}`);
    pageIndex = index; items = page.items; nextCursor = page.next_cursor;
    cursors[index + 1] = nextCursor;
    const grid = document.getElementById("latest");
    grid.replaceChildren(...items.map((frame, i) => {
      const shot = T.shot(frame);
      shot.addEventListener("click", () => { select(i, false); open(i); });
      return shot;
    }));
    if (!items.length) grid.replaceChildren(T.el("p", { class: "hint" }, "No pictures match these filters."));
    document.getElementById("prev").disabled = index === 0;
    document.getElementById("next").disabled = !nextCursor;
    const first = index * PAGE + 1;
    document.getElementById("page-info").textContent = items.length ? `${first}–${first + items.length - 1}${nextCursor ? "" : " (last page)"}` : "";
    selected = -1;
    if (items.length) select(0, false);
    document.body.dataset.ready = "1";
  }

  function open(index) {
    if (index < 0 || index >= items.length) return;
    select(index);
    const frame = items[index];
    const viewer = document.getElementById("viewer");
    const picture = document.getElementById("viewer-picture");
    const full = T.shot(frame, "frame");
    full.classList.add("full");
    picture.replaceChildren(full);
    document.getElementById("viewer-title").textContent = `${frame.device_id} · ${new Date(frame.captured_at).toLocaleString()}`;
    const facts = [["Trap", T.el("a", { href: `/traps/${encodeURIComponent(frame.device_id)}` }, frame.device_id)],
      ["Captured", new Date(frame.captured_at).toLocaleString()], ["Light", frame.night ? "night (infrared)" : "day"],
      ["Picture", `${frame.image_file} (${frame.width}×${frame.height})`], ["Sequence", `${frame.sequence_id}, frame ${frame.frame_index}`],
      ["Model", frame.model], ["Stored picture", frame.media.frame ? "full frame" : frame.media.thumbnail ? "thumbnail" : "none uploaded"]];
    const list = T.el("ul", { class: "box-list" }, ...frame.detections.map((d) => T.el("li", {}, T.el("span", { class: `dot ${d.category}` }), `${d.category} ${(d.conf * 100).toFixed(0)}%`)));
    document.getElementById("viewer-facts").replaceChildren(T.el("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [T.el("dt", {}, k), T.el("dd", {}, v)])),
      T.el("h3", {}, `${frame.detections.length} box${frame.detections.length === 1 ? "" : "es"}`), list);
    viewer.hidden = false;
    viewer.dataset.frame = frame.id;
  }
  const close = () => { document.getElementById("viewer").hidden = true; document.getElementById("latest").focus(); };
  const isOpen = () => !document.getElementById("viewer").hidden;

  async function step(delta) {
    const target = selected + delta;
    if (target >= items.length && nextCursor) { await load(pageIndex + 1); if (isOpen()) open(0); return; }
    if (target < 0 && pageIndex > 0) { await load(pageIndex - 1); select(items.length - 1); if (isOpen()) open(items.length - 1); return; }
    if (isOpen()) open(Math.max(0, Math.min(target, items.length - 1))); else select(target);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    const params = new URLSearchParams(window.location.search);
    for (const [k, v] of params.entries()) if (form().elements[k]) form().elements[k].value = v;
    const slider = form().elements.min_conf;
    const show = () => { slider.nextElementSibling.textContent = Number(slider.value).toFixed(2); };
    slider.addEventListener("input", show); show();
    form().addEventListener("submit", (e) => { e.preventDefault(); syncUrl(); cursors.length = 1; load(0); });
    document.getElementById("next").addEventListener("click", () => load(pageIndex + 1));
    document.getElementById("prev").addEventListener("click", () => load(pageIndex - 1));
    document.getElementById("viewer-close").addEventListener("click", close);
    document.getElementById("viewer-next").addEventListener("click", () => step(1));
    document.getElementById("viewer-prev").addEventListener("click", () => step(-1));
    document.addEventListener("keydown", (e) => {
      if (e.target.closest && e.target.closest("form")) return; // typing in a filter
      const keys = { ArrowRight: () => step(1), ArrowLeft: () => step(-1), Enter: () => open(selected), Escape: close,
        PageDown: () => nextCursor && load(pageIndex + 1), PageUp: () => pageIndex > 0 && load(pageIndex - 1) };
      if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
    });
    await load(0);
    const wanted = params.get("open");
    if (wanted) { const i = items.findIndex((f) => f.id === wanted); if (i >= 0) open(i); }
  });
})();
