// The queuectl dashboard: plain JS, no build step. Polls the JSON API about every second.
"use strict";
(function () {
  const STATES = ["pending", "processing", "completed", "failed", "dead", "cancelled"];
  const POLL_MS = 1000;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const view = { state: "", queue: "", tag: "", cursors: [null], selected: null, attempt: null };
  let lastOk = 0;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    for (const c of children) node.append(c === null || c === undefined ? "" : c);
    return node;
  }
  const badge = (state) => el("span", { class: "state s-" + state }, state);

  function ago(iso, now) {
    if (!iso) return "—";
    const s = (Date.parse(now) - Date.parse(iso)) / 1000;
    return s >= 0 ? human(s) + " ago" : "in " + human(-s);
  }
  // A moment for people, in the browser's zone: "14:03:12" today, "2026-12-08 01:30:00" another
  // day (the API speaks UTC ISO 8601; only what is shown is local).
  // The chart's minutes (the last hour): the time of day alone, even for those of yesterday.
  function hhmm(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  function local(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const p = (n) => String(n).padStart(2, "0");
    const hms = p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
    const t = new Date();
    if (d.getFullYear() === t.getFullYear() && d.getMonth() === t.getMonth() && d.getDate() === t.getDate()) return hms;
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + hms;
  }
  // "12s ago (14:02:48)": relative to the server's clock, then local clock time.
  const moment = (iso, now) => (iso ? ago(iso, now || new Date().toISOString()) + " (" + local(iso) + ")" : null);
  function human(s) {
    s = Math.round(s);
    if (s < 60) return s + "s";
    const two = (a, ua, b, ub) => a + ua + (b ? " " + b + ub : "");  // "1h", not "1h 0m"
    if (s < 3600) return two(Math.floor(s / 60), "m", s % 60, "s");
    if (s < 86400) return two(Math.floor(s / 3600), "h", Math.floor((s % 3600) / 60), "m");
    return two(Math.floor(s / 86400), "d", Math.floor((s % 86400) / 3600), "h");
  }

  // A duration as the CLI shows one: "850ms", "4.2s", then human's "12s", "4m 5s"...
  function took(s) {
    if (s === null || s === undefined) return "";
    if (s < 1) return Math.round(s * 1000) + "ms";
    return s < 10 ? s.toFixed(1) + "s" : human(s);
  }
  // Bytes in powers of 1024, as `queuectl list` shows them: "900K", "12M", "1.5G".
  function size(n) {
    if (n === null || n === undefined) return "";
    let v = n;
    for (const unit of ["B", "K", "M", "G", "T"]) {
      if (v < 1024 || unit === "T") return unit === "B" ? Math.round(v) + "B" : (v < 10 ? v.toFixed(1) : Math.round(v)) + unit;
      v /= 1024;
    }
    return "";
  }

  async function api(path, opts) {
    const res = await fetch(path, Object.assign({ credentials: "same-origin" }, opts));
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || res.status + " " + res.statusText);
    return body;
  }
  function post(path) {
    return api(path, { method: "POST", headers: { "X-CSRF-Token": csrf } });
  }

  let toastTimer;
  function toast(text, bad) {
    const t = $("toast");
    t.textContent = text;
    t.className = "toast" + (bad ? " bad" : "");
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), 3500);
  }

  async function act(jobId, action) {
    try {
      const job = await post("/api/jobs/" + encodeURIComponent(jobId) + "/" + action);
      toast(jobId + ": " + (job.state === "processing" ? "cancel requested" : job.state));
    } catch (e) {
      toast(e.message, true);
    }
    refresh();
  }
  function actionsFor(job) {
    const out = [];
    const add = (label, action, cls) =>
      out.push(el("button", { type: "button", class: cls || "", "data-action": action,
        onclick: (ev) => { ev.stopPropagation(); act(job.id, action); } }, label));
    if (job.state === "dead") add("Retry", "retry");
    if (["pending", "failed", "processing"].includes(job.state)) add("Cancel", "cancel", "danger");
    if (["completed", "cancelled"].includes(job.state)) add("Restart", "restart");
    return out;
  }

  // -- overview: counts, queues, workers, schedules ----------------------------------------------
  function renderOverview(o) {
    const counts = $("counts");
    counts.replaceChildren(...STATES.map((s) =>
      el("button", { type: "button", class: "count s-" + s + (view.state === s ? " on" : ""), "data-state": s,
        title: "Show " + s + " jobs", onclick: () => setFilter("state", view.state === s ? "" : s) },
        el("span", { class: "n" }, String(o.counts[s] || 0)), el("span", { class: "l" }, s))));

    $("queues").replaceChildren(...o.queues.map((q) => el("tr", { "data-queue": q.name },
      el("td", { class: "qname" }, q.name, q.paused ? el("span", { class: "badge paused" }, "paused") : "",
        q.concurrency ? el("span", { class: "badge", title: "at most " + q.concurrency + " running at once" },
          "max " + q.concurrency) : ""),
      el("td", { class: "num" }, String((q.counts.pending || 0))),
      el("td", { class: "num" }, String(q.counts.processing || 0)),
      el("td", { class: "num hide-sm" }, String(q.counts.failed || 0)),
      el("td", { class: "num" }, String(q.counts.dead || 0)),
      el("td", { class: "row-actions" }, el("button", { type: "button",
        "data-action": q.paused ? "resume" : "pause", onclick: () => pause(q.name, !q.paused) },
        q.paused ? "Resume" : "Pause")))));
    $("queues-empty").hidden = o.queues.length > 0;

    // Grouped by host (the API sorts them so): the host named on its first worker's row.
    const hosts = new Set(o.workers.map((w) => w.host)).size;
    $("workers-count").textContent = o.workers.length
      ? "(" + o.workers.length + (hosts > 1 ? " on " + hosts + " hosts" : "") + ")" : "";
    $("workers").replaceChildren(...o.workers.map((w, i) => el("tr",
      i && o.workers[i - 1].host === w.host ? {} : { class: "host-start", "data-host": w.host },
      el("td", { class: "host" }, i && o.workers[i - 1].host === w.host ? "" : w.host),
      el("td", { class: "mono" }, w.id),
      el("td", { class: "mono" }, w.job ? el("a", { href: "#" + w.job.id, title: w.job.command }, w.job.id) : "idle",
        (w.jobs || []).length > 1 ? el("span", { class: "muted", title: w.jobs.map((j) => j.id).join("\n") },
          " +" + (w.jobs.length - 1) + " more") : ""),
      el("td", {}, w.job ? human(w.job.running_seconds) : ""))));
    $("workers-empty").hidden = o.workers.length > 0;

    $("schedules").replaceChildren(...o.schedules.map((s) => el("tr", { "data-schedule": s.name },
      el("td", { title: s.job.command }, s.name),
      el("td", { class: "mono" }, s.cron ? s.cron + (s.tz && s.tz !== "UTC" ? " " + s.tz : "") : "every " + human(s.every)),
      el("td", { class: "next", title: local(s.next_tick) }, s.paused ? "paused" : ago(s.next_tick, o.now)))));
    $("schedules-empty").hidden = o.schedules.length > 0;

    // -- needs: each pool's units in use (every host), each worker's resources in use
    const res = o.resources || { pools: [], workers: [] };
    const resRows = res.pools.map((p) => el("tr", { "data-pool": p.name },
      el("td", { class: "mono" }, p.name), el("td", {}, "pool"), el("td", { class: "num" }, p.in_use + "/" + p.capacity)));
    for (const w of res.workers) {
      for (const [name, r] of Object.entries(w.resources)) {
        resRows.push(el("tr", { "data-resource": w.worker + ":" + name },
          el("td", { class: "mono", title: r.declared }, name), el("td", { class: "mono" }, w.host + " " + w.worker),
          el("td", { class: "num" }, r.in_use + "/" + r.units)));
      }
    }
    $("resources").replaceChildren(...resRows);
    $("resources-panel").hidden = resRows.length === 0;

    const queueSel = $("f-queue");
    const names = o.queues.map((q) => q.name);
    if (view.queue && !names.includes(view.queue)) names.push(view.queue);
    const have = Array.from(queueSel.options).slice(1).map((x) => x.value);
    if (have.join("\n") !== names.join("\n")) {
      queueSel.replaceChildren(el("option", { value: "" }, "any"), ...names.map((n) => el("option", { value: n }, n)));
      queueSel.value = view.queue;
    }
  }

  async function pause(name, paused) {
    try {
      await post("/api/queues/" + encodeURIComponent(name) + "/" + (paused ? "pause" : "resume"));
      toast(name + (paused ? " paused" : " resumed"));
    } catch (e) {
      toast(e.message, true);
    }
    refresh();
  }

  // -- jobs ------------------------------------------------------------------------------------
  function jobsQuery() {
    const p = new URLSearchParams({ limit: "50" });
    for (const k of ["state", "queue", "tag"]) if (view[k]) p.set(k, view[k]);
    const before = view.cursors[view.cursors.length - 1];
    if (before) p.set("before", before);
    return "/api/jobs?" + p;
  }
  function renderJobs(page, now) {
    view.next = page.next;
    $("jobs").replaceChildren(...page.jobs.map((j) => el("tr", { "data-id": j.id,
        class: j.id === view.selected ? "sel" : "", onclick: () => select(j.id) },
      el("td", { class: "mono" }, j.id), el("td", {}, badge(j.state)),
      el("td", { class: "num hide-sm", title: "attempts of at most " + (j.max_retries + 1) },
        j.attempts + "/" + (j.max_retries + 1)),
      el("td", { class: "hide-sm" }, j.queue),
      el("td", { class: "hide-sm", title: local(j.updated_at) }, ago(j.updated_at, now)),
      el("td", { class: "num hide-sm" }, j.state === "processing" ? "" : took(j.last_duration)),
      el("td", { class: "num hide-sm" }, j.state === "processing" ? "" : size(j.last_max_rss_bytes)),
      el("td", { class: "cmd mono", title: j.command },
        ...j.tags.map((t) => el("span", { class: "tag", title: "tag " + t }, t)), j.command),
      el("td", { class: "err hide-sm", title: j.last_error || "" }, j.last_error || ""),
      el("td", { class: "row-actions hide-sm" }, ...actionsFor(j)))));
    $("jobs-empty").hidden = page.jobs.length > 0;
    $("newer").disabled = view.cursors.length <= 1;
    $("older").disabled = !page.next;
    $("page").textContent = "page " + view.cursors.length;
  }
  function setFilter(key, value) {
    view[key] = value;
    view.cursors = [null];
    $("f-" + key).value = value;
    refresh();
  }

  // -- job detail ------------------------------------------------------------------------------
  function select(id) {
    view.selected = id;
    view.attempt = null;
    if (location.hash !== "#" + id) history.replaceState(null, "", "#" + id);
    $("detail").hidden = false;
    refreshDetail();
  }
  function closeDetail() {
    view.selected = null;
    $("detail").hidden = true;
    history.replaceState(null, "", location.pathname + location.search);
  }
  async function refreshDetail() {
    const id = view.selected;
    if (!id) return;
    let job, log;
    try {
      job = await api("/api/jobs/" + encodeURIComponent(id));
      const q = view.attempt ? "?attempt=" + view.attempt : "";
      log = await api("/api/jobs/" + encodeURIComponent(id) + "/log" + q);
    } catch (e) {
      $("d-title").textContent = id;
      $("d-fields").replaceChildren(el("dd", {}, e.message));
      return;
    }
    if (view.selected !== id) return;
    $("d-title").replaceChildren(id, " ", badge(job.orphaned ? "orphaned" : job.state));
    // What `queuectl show` shows, in its order and words (the server says why a job is in its state).
    const field = (k, v, cls) => [el("dt", {}, k),
      el("dd", { class: cls || "", "data-field": k }, v === null || v === undefined || v === "" ? "—" : v)];
    const hist = job.history || [];
    const last = hist.length ? hist[hist.length - 1] : null;
    const env = Object.entries(job.env || {});
    $("d-fields").replaceChildren(
      ...field("state", job.why, job.orphaned ? "why bad" : "why"),
      ...field("command", el("code", {}, job.command)),
      ...field("queue", job.queue), ...field("priority", String(job.priority)),
      ...field("tags", job.tags.join(", ")),
      ...field("cwd", job.cwd ? el("code", {}, job.cwd) : el("span", { class: "muted" }, "the worker's")),
      ...field("env", env.length ? el("code", {}, env.map(([k, v]) => k + "=" + v).join(" ")) : null),
      ...field("after", job.after.join(", ")),
      ...field("unique key", job.unique_key),
      ...field("retries", job.retry_rules),
      ...field("timeout", job.timeout === null ? "none" : human(job.timeout)),
      ...field("created", moment(job.created_at, view.now)),
      ...(["pending", "failed"].includes(job.state)
        ? field("runs", Date.parse(job.run_at) > Date.parse(view.now || new Date().toISOString())
          ? moment(job.run_at, view.now) : "when a worker is free")
        : []),
      ...(job.state === "processing" ? [...field("started", moment(job.updated_at, view.now)),
        ...(job.running_seconds !== null ? field("running for", human(job.running_seconds)) : [])] : []),
      ...(job.state !== "processing" && last && last.finished_at
        ? [...field("ran", moment(last.started_at || last.finished_at, view.now)),
          ...field("ended", moment(last.finished_at, view.now))] : []),
      ...field("worker", job.worker_id ? job.worker_id + " on " + (job.host || "?") : null),
      ...(job.orphaned ? field("orphaned", "yes: its worker is gone", "why bad") : []),
      ...(job.cancel_requested ? field("cancel", "requested; the worker is stopping it") : []));
    $("d-actions").replaceChildren(...actionsFor(job));
    view.shownAttempt = log.attempt;
    renderHistory(job, hist);
    $("d-attempts").replaceChildren(...job.attempt_logs.map((a) => el("button", { type: "button",
      class: a.attempt === log.attempt ? "on" : "", onclick: () => { view.attempt = a.attempt; refreshDetail(); } },
      "#" + a.attempt + (a.bytes === null ? "" : " · " + a.bytes + " B"))));
    if (!job.attempt_logs.length) $("d-attempts").replaceChildren(el("span", { class: "muted" }, "not run yet"));
    const pre = $("d-log");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = log.text || (job.attempts ? "(no output)" : "");
    if (atEnd) pre.scrollTop = pre.scrollHeight;  // follow a running job unless the reader scrolled up
    $("d-log-note").textContent = (log.attempt ? "attempt " + log.attempt : "") +
      (log.running ? " · live" : "") + (log.truncated ? " · last 64 KiB" : "") +
      (log.source === "stored tail" ? " · stored tail (the log file is on the worker's host)" : "");
  }

  function ended(a, job) {
    if (!a.finished_at) return job.orphaned ? "orphaned" : "running";
    let end = a.signal || (a.exit_code === null ? "" : "exit " + a.exit_code);
    if (a.error && (a.exit_code === null || (a.error !== "exit " + a.exit_code && a.error !== "exit status " + a.exit_code)))
      end = end ? end + ": " + a.error : a.error;
    return end;
  }
  function renderHistory(job, hist) {
    $("d-history").querySelector("tbody").replaceChildren(...hist.map((a) => {
      const ok = a.finished_at && a.exit_code === 0 && !a.error;
      const ran = a.finished_at ? took(a.duration)
        : (a.started_at ? human((Date.parse(view.now) - Date.parse(a.started_at)) / 1000) + "…" : "");
      return el("tr", { "data-attempt": String(a.attempt), class: a.attempt === view.shownAttempt ? "sel" : "",
          title: "Show this attempt's log", onclick: () => { view.attempt = a.attempt; refreshDetail(); } },
        el("td", { class: "num" }, String(a.attempt)),
        el("td", { title: a.started_at ? moment(a.started_at, view.now) : "" }, a.started_at ? local(a.started_at) : "?"),
        el("td", { class: "num" }, ran),
        el("td", { class: "num" }, took(a.cpu_seconds)),
        el("td", { class: "num" }, size(a.max_rss_bytes)),
        el("td", { class: "end " + (!a.finished_at ? (job.orphaned ? "bad" : "run") : ok ? "ok" : "bad"),
          title: a.error || "" }, ended(a, job)),
        el("td", { class: "mono" }, a.worker_id || ""), el("td", {}, a.host || ""));
    }));
    $("d-history").hidden = !hist.length;
    $("d-history-empty").hidden = hist.length > 0;
  }

  // -- throughput: attempts finished per minute, last hour ------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }
  function renderThroughput(t) {
    $("tp-ok").textContent = String(t.completed);
    $("tp-bad").textContent = String(t.failed);
    const W = 600, H = 90, n = t.minutes.length, slot = W / n, bar = slot * 0.7;  // stretched: gaps scale too
    const top = Math.max(1, ...t.minutes.map((m) => m.completed + m.failed));
    const y = (v) => (v / top) * H;
    const bars = [];
    t.minutes.forEach((m, i) => {
      const x = i * slot + (slot - bar) / 2;
      const label = hhmm(m.at) + " · " + m.completed + " completed, " + m.failed + " failed";
      const g = svg("g", { class: "minute", "data-minute": m.at }, svg("title", {}, label));
      g.append(svg("rect", { class: "hit", x: i * slot, y: 0, width: slot, height: H }));
      if (m.completed) g.append(svg("rect", { class: "ok", x, y: H - y(m.completed), width: bar, height: y(m.completed) }));
      if (m.failed) g.append(svg("rect", { class: "bad", x, y: H - y(m.completed + m.failed), width: bar, height: y(m.failed) }));
      bars.push(g);
    });
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img",
      "aria-label": t.completed + " completed and " + t.failed + " failed in the last hour" },
      svg("line", { class: "base", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }), ...bars);
    const first = t.minutes.length ? hhmm(t.minutes[0].at) : "";
    $("tp-chart").replaceChildren(
      el("div", { class: "y" }, el("span", {}, String(top)), el("span", {}, "0")),
      el("div", { class: "plot" }, chart,
        el("div", { class: "x" }, el("span", {}, first), el("span", {}, "30 min ago"), el("span", {}, "now"))));
  }
  let tpAt = 0;
  async function refreshThroughput(changed) {
    // Minute buckets: every 10 s is plenty, every 2 s at most while jobs keep finishing.
    if (Date.now() - tpAt < (changed ? 2000 : 10000)) return;
    tpAt = Date.now();
    try {
      renderThroughput(await api("/api/throughput"));
    } catch (e) {
      tpAt = 0;  // try again on the next round
    }
  }

  // -- the loop --------------------------------------------------------------------------------
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [o, page] = await Promise.all([api("/api/overview"), api(jobsQuery())]);
      view.now = o.now;  // the server's clock, for relative times in the job view
      renderOverview(o);
      renderJobs(page, o.now);
      const finished = o.counts.completed + o.counts.failed + o.counts.dead;
      refreshThroughput(finished !== view.finished);  // sooner when something ended
      view.finished = finished;
      lastOk = Date.now();
      $("live").textContent = "live · " + local(new Date().toISOString());
      $("live").className = "live ok";
      await refreshDetail();
    } catch (e) {
      $("live").textContent = "not reachable: " + e.message;
      $("live").className = "live down";
    } finally {
      busy = false;
    }
  }

  function init() {
    const stateSel = $("f-state");
    for (const s of STATES) stateSel.append(el("option", { value: s }, s));
    stateSel.addEventListener("change", () => setFilter("state", stateSel.value));
    $("f-queue").addEventListener("change", () => setFilter("queue", $("f-queue").value));
    let tagTimer;
    $("f-tag").addEventListener("input", () => {
      clearTimeout(tagTimer);
      tagTimer = setTimeout(() => setFilter("tag", $("f-tag").value.trim()), 300);
    });
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("older").addEventListener("click", () => { if (view.next) { view.cursors.push(view.next); refresh(); } });
    $("newer").addEventListener("click", () => { if (view.cursors.length > 1) { view.cursors.pop(); refresh(); } });
    $("d-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
    window.addEventListener("hashchange", () => { const id = decodeURIComponent(location.hash.slice(1)); if (id) select(id); });
    if (location.hash.length > 1) select(decodeURIComponent(location.hash.slice(1)));
    refresh();
    setInterval(() => {
      if (!document.hidden) refresh();
      if (lastOk && Date.now() - lastOk > 5000) $("live").className = "live down";
    }, POLL_MS);
  }
  init();
})();
