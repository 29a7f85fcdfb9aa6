// The learner demo page: sign in, list published lessons, play one with the
// Lectern player SDK (window.LecternPlayer, loaded just before this file).
// Plain JavaScript on purpose: it is served as written, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { player: null, lessonId: null, events: [] };
  // For the browser end-to-end test and curious developers.
  window.lecternDemo = state;

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: body === undefined ? { accept: "application/json" } : { "content-type": "application/json", accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: reported below by status.
    }
    if (!response.ok) {
      const message = json && json.error ? json.error.message : `the server answered ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      error.code = json && json.error ? json.error.code : null;
      throw error;
    }
    return json;
  }

  // "watch" keeps the lesson list visible below the player.
  function show(section) {
    $("sign-in").hidden = section !== "sign-in";
    $("catalogue").hidden = section === "sign-in";
    $("watch").hidden = section !== "watch";
    $("sign-out").hidden = section === "sign-in";
  }

  function status(text) {
    $("status").textContent = text;
  }

  function formatDuration(seconds) {
    if (typeof seconds !== "number") return "";
    const s = Math.round(seconds);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  async function start() {
    try {
      const me = await api("GET", "/api/v1/me");
      $("who").textContent = me.email || me.user?.email || "";
      await showCatalogue();
      const wanted = new URLSearchParams(location.hash.slice(1)).get("lesson");
      if (wanted) play(wanted, sessionStorage.getItem(`lectern.demo.title.${wanted}`) || "");
    } catch (e) {
      if (e.status === 401) {
        show("sign-in");
      } else {
        show("sign-in");
        $("sign-in-error").textContent = e.message;
      }
    }
  }

  async function showCatalogue() {
    show(state.lessonId ? "watch" : "catalogue");
    const list = $("lessons");
    list.replaceChildren();
    $("lessons-status").textContent = "Loading…";
    try {
      const page = await api("GET", "/api/v1/search?sort=newest&limit=50");
      $("lessons-status").textContent = page.results.length === 0 ? "No published lessons yet." : "";
      for (const lesson of page.results) {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.lessonId = lesson.lesson_id;
        const title = document.createElement("strong");
        title.textContent = lesson.title;
        const course = document.createElement("div");
        course.className = "course";
        course.textContent = [lesson.course && lesson.course.title, formatDuration(lesson.duration_s)].filter(Boolean).join(" · ");
        button.append(title, course);
        button.addEventListener("click", () => play(lesson.lesson_id, lesson.title));
        const item = document.createElement("li");
        item.append(button);
        list.append(item);
      }
    } catch (e) {
      $("lessons-status").textContent = `Cannot list lessons: ${e.message}`;
    }
  }

  function play(lessonId, title) {
    if (state.player) state.player.destroy();
    state.lessonId = lessonId;
    sessionStorage.setItem(`lectern.demo.title.${lessonId}`, title);
    history.replaceState(null, "", `#lesson=${encodeURIComponent(lessonId)}`);
    $("lesson-title").textContent = title;
    show("watch");
    status("Loading…");
    const player = window.LecternPlayer.createPlayer($("video"), { lessonId, autoplay: true });
    state.player = player;
    const record = (type) => (detail) => state.events.push({ type, detail, at: Date.now() });
    for (const type of ["ready", "progress", "qualitychange", "qualities", "captions", "captionchange", "ratechange", "error"]) player.on(type, record(type));
    player.on("ready", (info) => {
      status(`Ready (${info.engine}), starting at ${formatDuration(info.position)} at ${info.speed}×`);
      renderQualities(player.qualities());
      markSpeed(info.speed);
    });
    player.on("qualities", renderQualities);
    player.on("captions", renderCaptions);
    player.on("captionchange", () => renderCaptions(player.captions()));
    player.on("ratechange", ({ speed }) => markSpeed(speed));
    player.on("qualitychange", (q) => {
      status(`Playing ${q.height ? q.height + "p" : "audio"}${q.auto ? " (auto)" : ""}`);
    });
    player.on("progress", (beat) => status(`Progress saved at ${formatDuration(beat.position_s)}`));
    player.on("error", (e) => status(`${e.fatal ? "Cannot play" : "Note"}: ${e.message} (${e.code})`));
    player.ready.catch(() => undefined);
  }

  function renderQualities(qualities) {
    const select = $("quality");
    const current = state.player ? state.player.quality : -1;
    select.replaceChildren(
      ...qualities.map((q) => {
        const option = document.createElement("option");
        option.value = String(q.index);
        option.textContent = q.label;
        option.selected = q.index === current;
        return option;
      }),
    );
  }

  function renderCaptions(captions) {
    const select = $("captions");
    const current = state.player ? state.player.caption : -1;
    const off = document.createElement("option");
    off.value = "-1";
    off.textContent = "Off";
    select.replaceChildren(
      off,
      ...captions.map((c) => {
        const option = document.createElement("option");
        option.value = String(c.index);
        option.textContent = c.label;
        option.lang = c.language;
        return option;
      }),
    );
    select.value = String(current);
    select.disabled = captions.length === 0;
  }

  function markSpeed(speed) {
    for (const button of $("speeds").querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.speed) === speed));
    }
  }

  $("speeds").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-speed]");
    if (button && state.player) state.player.setSpeed(Number(button.dataset.speed));
  });
  $("quality").addEventListener("change", (event) => {
    if (state.player) state.player.setQuality(Number(event.target.value));
  });
  $("captions").addEventListener("change", (event) => {
    if (state.player) state.player.setCaption(Number(event.target.value));
  });
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      await api("POST", "/api/v1/auth/login", { email: $("email").value, password: $("password").value });
      await start();
    } catch (e) {
      $("sign-in-error").textContent = e.message;
    }
  });
  $("sign-out").addEventListener("click", async () => {
    if (state.player) state.player.destroy();
    await api("POST", "/api/v1/auth/logout").catch(() => undefined);
    history.replaceState(null, "", location.pathname);
    location.reload();
  });

  if (!window.LecternPlayer) {
    document.body.textContent = "The player SDK did not load: build it (make demo) and reload.";
    return;
  }
  start();
})();
