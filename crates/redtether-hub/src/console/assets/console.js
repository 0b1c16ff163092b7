// The console's one script, embedded in the hub binary. Everything works without it; with it,
// the device list follows devices going on- and offline, secrets get a copy button, dangerous
// buttons ask first, and a flows file can be picked instead of pasted.
"use strict";

// Live online state: rows carry data-device; the server sends {"online": [...]} once, then
// {"up": [...], "down": [...]} as devices connect and disconnect.
function followPresence() {
  const rows = document.querySelectorAll("[data-device]");
  if (rows.length === 0 || !window.EventSource) return;
  const byId = new Map();
  rows.forEach((row) => byId.set(row.getAttribute("data-device"), row));
  const mark = (id, online) => {
    const row = byId.get(id);
    if (!row) return;
    const cell = row.querySelector("[data-online]");
    if (!cell) return;
    const was = cell.getAttribute("data-online") === "true";
    cell.setAttribute("data-online", online ? "true" : "false");
    const label = cell.querySelector(".label");
    label.textContent = online ? "online" : "offline";
    label.className = "label state-" + (online ? "online" : "offline");
    if (was && !online) {
      const seen = cell.querySelector(".seen");
      if (seen) seen.textContent = "just now";
    }
  };
  const source = new EventSource("/console/live");
  source.addEventListener("message", (event) => {
    let change;
    try { change = JSON.parse(event.data); } catch (_) { return; }
    if (Array.isArray(change.online)) {
      const now = new Set(change.online);
      byId.forEach((_, id) => mark(id, now.has(id)));
    }
    (change.up || []).forEach((id) => mark(id, true));
    (change.down || []).forEach((id) => mark(id, false));
    document.body.setAttribute("data-live", "connected");
  });
}

// A device's Node-RED logs: the list carries the event stream's URL; every line is appended as
// text (never markup), the oldest go past a bound, and the view sticks to the bottom unless the
// reader scrolled up. The browser resumes a dropped stream itself (Last-Event-ID).
function followLogs() {
  const list = document.querySelector("[data-logs-follow]");
  if (!list || !window.EventSource) return;
  const state = document.getElementById("logs-state");
  const keep = 5000;
  const add = (className, time, text, seq) => {
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    const item = document.createElement("li");
    item.className = className;
    if (seq !== undefined) item.setAttribute("data-seq", String(seq));
    const stamp = document.createElement("span");
    stamp.className = "time";
    stamp.textContent = time;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(stamp, " ", body);
    list.append(item);
    while (list.children.length > keep) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  };
  const say = (label) => { if (state) { state.setAttribute("data-state", label); } };
  list.scrollTop = list.scrollHeight;
  const source = new EventSource(list.getAttribute("data-logs-follow"));
  source.addEventListener("open", () => say("live"));
  source.addEventListener("error", () => say("reconnecting"));
  source.addEventListener("message", (event) => {
    let line;
    try { line = JSON.parse(event.data); } catch (_) { return; }
    add("stream-" + (line.stream === "stderr" ? "stderr" : "stdout"), line.time || "", line.text || "", line.seq);
    say("live");
  });
  source.addEventListener("skipped", (event) => {
    let gap;
    try { gap = JSON.parse(event.data); } catch (_) { return; }
    add("skipped", "", "… " + gap.count + " lines were dropped from the device's buffer before they could be sent");
  });
  source.addEventListener("end", () => { source.close(); say("ended"); });
}

// A copy button next to every secret shown once.
function copyButtons() {
  document.querySelectorAll("[data-copy]").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", () => {
      const target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) return;
      const text = target.textContent;
      const done = () => { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, () => {});
      } else {
        const range = document.createRange();
        range.selectNodeContents(target);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        try { document.execCommand("copy"); done(); } catch (_) { /* selected for the user */ }
      }
    });
  });
}

// Buttons that change a device or remove something ask first.
function confirmations() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
}

// A flows.json picked from disk fills the deploy form's text area.
function flowsFile() {
  document.querySelectorAll("input[data-fills]").forEach((input) => {
    input.hidden = false;
    input.addEventListener("change", () => {
      const target = document.getElementById(input.getAttribute("data-fills"));
      const file = input.files && input.files[0];
      if (!target || !file) return;
      file.text().then((text) => { target.value = text; });
    });
  });
}

// Pages that wait for a device (a deployment, a policy) look again until it is done.
function refreshWhilePending() {
  const pending = document.querySelector("[data-refresh]");
  if (!pending) return;
  const seconds = Number(pending.getAttribute("data-refresh")) || 2;
  window.setTimeout(() => window.location.reload(), seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  followPresence();
  followLogs();
  copyButtons();
  confirmations();
  flowsFile();
  refreshWhilePending();
});
