// asu-ci selector: device search, official images and the custom build form.
// Plain browser JavaScript, no dependencies. All data comes from the static tree
// this page is served from; builds go to the API named in <meta name="asu-ci-api">
// (empty: the same origin).
"use strict";

(() => {
  const PACKAGE_WORD = /^-?[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$/;
  const REQUEST_HASH = /^[0-9a-f]{64}$/;
  const POLL_MS = 2000;
  const MAX_RESULTS = 100;
  const SAVED_KEY = "asu-ci.builds";
  const SAVED_MAX = 50;
  const LOG_LINES = 200;
  // The steps every client knows, in the order a build passes them.
  const STEPS = [
    ["init", "Queued"],
    ["download_imagebuilder", "Download"],
    ["unpack_imagebuilder", "Unpack"],
    ["calculate_packages_hash", "Packages"],
    ["building_image", "Image"],
  ];
  const STEP_WORDS = {
    init: "Waiting to start",
    queued: "Queued",
    started: "Started",
    container_setup: "Preparing the build environment",
    download_imagebuilder: "Downloading the ImageBuilder",
    validate_revision: "Checking the ImageBuilder revision",
    validate_manifest: "Checking the package selection",
    unpack_imagebuilder: "Unpacking the ImageBuilder",
    calculate_packages_hash: "Resolving the packages",
    building_image: "Building the image",
    signing_images: "Signing the images",
    done: "Done",
    failed: "Failed",
  };

  const $ = (id) => document.getElementById(id);
  const meta = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    return el ? el.content : "";
  };

  // --- small helpers -----------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function show(el, visible) {
    el.hidden = !visible;
  }

  function unique(list) {
    return [...new Set(list)];
  }

  function words(text) {
    return unique(text.split(/[\s,]+/).filter(Boolean));
  }

  function titleText(title) {
    if (title.title) return String(title.title);
    return [title.vendor, title.model, title.variant].filter(Boolean).join(" ");
  }

  function tail(text, lines) {
    const all = String(text || "").replace(/\s+$/, "").split("\n");
    return all.length > lines ? all.slice(-lines).join("\n") : all.join("\n");
  }

  function byteLength(text) {
    return new TextEncoder().encode(text).length;
  }

  function when(value) {
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(String(value));
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
  }

  class HttpError extends Error {
    constructor(url, status) {
      super(`${url} answered HTTP ${status}`);
      this.status = status;
    }
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-cache", headers: { Accept: "application/json" } });
    if (!response.ok) throw new HttpError(url, response.status);
    return response.json();
  }

  // The default package set of a device: target defaults plus device packages,
  // where "-name" in the device packages drops a target default.
  function defaultPackages(device) {
    const chosen = [...(device.default_packages || [])];
    for (const name of device.device_packages || []) {
      if (name.startsWith("-")) {
        const at = chosen.indexOf(name.slice(1));
        if (at >= 0) chosen.splice(at, 1);
      } else if (!chosen.includes(name)) {
        chosen.push(name);
      }
    }
    return chosen;
  }

  // What a package list adds to and drops from the defaults (the build is exact:
  // a default that is not listed is left out).
  function changes(list, defaults) {
    const wanted = new Set(list.filter((w) => !w.startsWith("-")));
    const base = new Set(defaults);
    return {
      added: [...wanted].filter((w) => !base.has(w)),
      removed: defaults.filter((w) => !wanted.has(w)),
    };
  }

  function listed(names) {
    const most = 12;
    return names.length > most ? `${names.slice(0, most - 2).join(", ")} and ${names.length - most + 2} more` : names.join(", ");
  }

  function describeChanges(list, defaults) {
    const { added, removed } = changes(list, defaults);
    const parts = [];
    if (added.length) parts.push(`adds ${listed(added)}`);
    if (removed.length) parts.push(`leaves out ${listed(removed)}`);
    return parts.length ? `Compared with the defaults this ${parts.join("; ")}.` : "The default package set of this device.";
  }

  // One line on what a build request asked for (the "request" of a 200 body).
  function describeRequest(request, defaults) {
    const parts = [];
    if (Array.isArray(request.packages)) parts.push(describeChanges(request.packages, defaults));
    if (request.filesystem) parts.push(`Filesystem ${request.filesystem}.`);
    if (request.rootfs_size_mb) parts.push(`Root filesystem of ${request.rootfs_size_mb} MiB.`);
    if (request.defaults_sha256 || request.defaults) parts.push("With a first-boot script.");
    return parts.join(" ");
  }

  // --- the search index ----------------------------------------------------------

  function buildIndex(overview) {
    const entries = [];
    for (const profile of overview.profiles || []) {
      const id = String(profile.id);
      const titles = profile.titles && profile.titles.length ? profile.titles : [{ title: id }];
      const idWords = id.toLowerCase().replace(/[_,.-]+/g, " ");
      for (const title of titles) {
        const label = titleText(title) || id;
        const low = label.toLowerCase();
        entries.push({ label, low, id, target: String(profile.target), hay: `${low} ${id.toLowerCase()} ${idWords} ${profile.target}` });
      }
    }
    entries.sort((a, b) => (a.low < b.low ? -1 : a.low > b.low ? 1 : 0));
    return { entries, devices: new Set(entries.map((e) => `${e.target} ${e.id}`)).size };
  }

  function search(entries, query) {
    const parts = query.toLowerCase().split(/\s+/).filter(Boolean);
    if (!parts.length) return [];
    const first = parts[0];
    const ranked = [];
    for (const entry of entries) {
      if (!parts.every((p) => entry.hay.includes(p))) continue;
      const rank = entry.low.startsWith(first) ? 0 : ` ${entry.low}`.includes(` ${first}`) ? 1 : 2;
      ranked.push([rank, entry]);
    }
    ranked.sort((a, b) => a[0] - b[0]);
    return ranked.map((r) => r[1]);
  }

  // --- builds remembered by this browser ------------------------------------------

  function savedBuilds() {
    try {
      const list = JSON.parse(localStorage.getItem(SAVED_KEY) || "[]");
      return Array.isArray(list) ? list.filter((e) => e && REQUEST_HASH.test(String(e.hash))) : [];
    } catch {
      return [];
    }
  }

  function storeBuilds(list) {
    try {
      localStorage.setItem(SAVED_KEY, JSON.stringify(list.slice(0, SAVED_MAX)));
    } catch {
      // Storage full or disabled: the build still works, it is just not remembered.
    }
  }

  function rememberBuild(entry) {
    storeBuilds([entry, ...savedBuilds().filter((e) => e.hash !== entry.hash)]);
  }

  function forgetBuild(hash) {
    storeBuilds(savedBuilds().filter((e) => e.hash !== hash));
  }

  // --- the app -----------------------------------------------------------------

  function start() {
    const api = meta("asu-ci-api").replace(/\/+$/, "");
    const client = `asu-ci-site/${meta("asu-ci-version") || "unknown"}`;
    const siteTitle = document.title;
    const app = {
      overview: null,
      versions: [],
      stable: "",
      indexes: new Map(),
      entries: [],
      devices: 0,
      hits: [],
      active: -1,
      device: null,
      defaults: [],
      generation: 0,
      view: 0,
      timer: 0,
      syncTimer: 0,
    };

    const els = {
      alert: $("alert"),
      version: $("version"),
      searchView: $("search-view"),
      search: $("search"),
      results: $("results"),
      hint: $("search-hint"),
      deviceView: $("device-view"),
      back: $("back"),
      title: $("device-title"),
      facts: $("device-facts"),
      official: $("official"),
      mine: $("mine"),
      mineList: $("mine-list"),
      form: $("build-form"),
      packages: $("packages"),
      packagesChanges: $("packages-changes"),
      packagesError: $("packages-error"),
      reset: $("reset-packages"),
      defaultsField: $("defaults-field"),
      defaults: $("defaults"),
      defaultsError: $("defaults-error"),
      filesystemField: $("filesystem-field"),
      filesystem: $("filesystem"),
      rootfsField: $("rootfs-field"),
      rootfs: $("rootfs"),
      rootfsError: $("rootfs-error"),
      submit: $("submit"),
      share: $("share"),
      formStatus: $("form-status"),
      buildStatus: $("build-status"),
      build: $("build"),
    };

    function fail(message) {
      els.alert.textContent = message;
      show(els.alert, true);
    }

    function clearAlert() {
      els.alert.textContent = "";
      show(els.alert, false);
    }

    function pathOf(version) {
      for (const branch of Object.values(app.overview.branches || {})) {
        if ((branch.versions || []).includes(version)) {
          return String(branch.path || "releases/{version}").replace("{version}", version);
        }
      }
      return `releases/${version}`;
    }

    function server() {
      return app.overview.server || {};
    }

    // --- addresses -------------------------------------------------------------

    function params() {
      return new URLSearchParams(location.search);
    }

    function currentVersion() {
      const asked = params().get("version");
      if (asked && app.versions.includes(asked)) return asked;
      return app.versions.includes(app.stable) ? app.stable : app.versions[0];
    }

    function addressOf(fields) {
      const query = new URLSearchParams();
      for (const [key, value] of Object.entries(fields)) {
        if (value !== undefined && value !== null && value !== "") query.set(key, value);
      }
      const text = query.toString();
      return text ? `?${text}` : location.pathname;
    }

    function go(fields) {
      history.pushState(null, "", addressOf(fields));
      route(true);
    }

    // --- versions --------------------------------------------------------------

    async function loadVersions() {
      app.overview = await getJSON("json/v1/overview.json");
      const served = [];
      for (const branch of Object.values(app.overview.branches || {})) {
        if (branch.enabled !== false) served.push(...(branch.versions || []));
      }
      let listed = [];
      try {
        const versions = await getJSON(".versions.json");
        listed = (versions.versions_list || []).map(String);
        app.stable = String(versions.stable_version || "");
      } catch {
        listed = [];
      }
      const known = new Set(served);
      app.versions = unique([...listed.filter((v) => known.has(v)), ...served.filter((v) => !listed.includes(v))]);
      if (!app.stable) app.stable = (app.overview.latest || [])[0] || app.versions[0] || "";
      els.version.replaceChildren(...app.versions.map((v) => h("option", { value: v, text: v })));
      els.version.disabled = app.versions.length < 2;
    }

    async function indexOf(version) {
      if (!app.indexes.has(version)) {
        const loading = getJSON(`${pathOf(version)}/.overview.json`).then(buildIndex);
        app.indexes.set(version, loading);
        loading.catch(() => app.indexes.delete(version));
      }
      return app.indexes.get(version);
    }

    // --- search view -------------------------------------------------------------

    function closeResults() {
      show(els.results, false);
      els.search.setAttribute("aria-expanded", "false");
      els.search.removeAttribute("aria-activedescendant");
      app.active = -1;
    }

    function setActive(index) {
      const options = els.results.children;
      if (app.active >= 0 && options[app.active]) options[app.active].setAttribute("aria-selected", "false");
      app.active = index;
      const option = options[index];
      if (!option) {
        els.search.removeAttribute("aria-activedescendant");
        return;
      }
      option.setAttribute("aria-selected", "true");
      els.search.setAttribute("aria-activedescendant", option.id);
      option.scrollIntoView({ block: "nearest" });
    }

    function updateResults() {
      const query = els.search.value.trim();
      app.hits = search(app.entries, query);
      const shown = app.hits.slice(0, MAX_RESULTS);
      els.results.replaceChildren(
        ...shown.map((entry, i) =>
          h(
            "li",
            {
              id: `device-option-${i}`,
              role: "option",
              "aria-selected": "false",
              onmousedown: (event) => event.preventDefault(),
              onclick: () => openEntry(entry),
            },
            h("span", { class: "name", text: entry.label }),
            h("span", { class: "where", text: entry.target }),
          ),
        ),
      );
      app.active = -1;
      els.search.removeAttribute("aria-activedescendant");
      const open = shown.length > 0 && document.activeElement === els.search;
      show(els.results, open);
      els.search.setAttribute("aria-expanded", String(open));
      const version = currentVersion();
      if (!query) els.hint.textContent = `${app.devices} devices in OpenWrt ${version}.`;
      else if (!app.hits.length) els.hint.textContent = `No device in OpenWrt ${version} matches “${query}”.`;
      else if (app.hits.length > shown.length) els.hint.textContent = `${app.hits.length} matches; the first ${shown.length} are shown, type more to narrow them down.`;
      else els.hint.textContent = `${app.hits.length} ${app.hits.length === 1 ? "match" : "matches"}; use the arrow keys and Enter to choose.`;
    }

    function openEntry(entry) {
      closeResults();
      go({ version: currentVersion(), target: entry.target, profile: entry.id });
    }

    function onSearchKey(event) {
      const count = els.results.children.length;
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        if (!count) return;
        event.preventDefault();
        if (els.results.hidden) {
          show(els.results, true);
          els.search.setAttribute("aria-expanded", "true");
        }
        const step = event.key === "ArrowDown" ? 1 : -1;
        setActive(app.active < 0 ? (step > 0 ? 0 : count - 1) : (app.active + step + count) % count);
      } else if (event.key === "Enter") {
        event.preventDefault();
        const pick = app.active >= 0 ? app.hits[app.active] : app.hits.length === 1 ? app.hits[0] : null;
        if (pick) openEntry(pick);
        else if (count) setActive(0);
      } else if (event.key === "Escape") {
        if (!els.results.hidden) {
          event.preventDefault();
          closeResults();
        }
      }
    }

    async function showSearch(version, focus) {
      show(els.deviceView, false);
      show(els.searchView, true);
      document.title = `Find your device · ${siteTitle}`;
      els.search.disabled = true;
      els.hint.textContent = `Loading the devices of OpenWrt ${version}…`;
      const view = app.view;
      let index;
      try {
        index = await indexOf(version);
      } catch (error) {
        fail(`The device list of OpenWrt ${version} cannot be loaded (${error.message}).`);
        return;
      }
      if (view !== app.view) return;
      app.entries = index.entries;
      app.devices = index.devices;
      els.search.disabled = false;
      if (focus) els.search.focus();
      updateResults();
    }

    // --- device view --------------------------------------------------------------

    // Sysupgrade images first, then factory images, kernels last.
    function imageRank(image) {
      const type = String(image.type || "");
      if (type === "sysupgrade") return 0;
      if (type.startsWith("factory")) return 1;
      return type === "kernel" || image.filesystem === "initramfs" ? 3 : 2;
    }

    function imagesTable(images, linkOf, caption) {
      const sorted = [...images].sort((a, b) => imageRank(a) - imageRank(b));
      return h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "images" },
          h("caption", { class: "visually-hidden", text: caption }),
          h("thead", {}, h("tr", {}, ["Type", "Filesystem", "File", "SHA-256"].map((name) => h("th", { scope: "col", text: name })))),
          h(
            "tbody",
            {},
            sorted.map((image) => {
              const href = linkOf(image);
              return h(
                "tr",
                {},
                h("td", { "data-label": "Type", text: image.type || "" }),
                h("td", { "data-label": "Filesystem", text: image.filesystem || "—" }),
                h("td", { "data-label": "File", class: "file" }, href ? h("a", { href, download: image.name, text: image.name }) : image.name),
                h("td", { "data-label": "SHA-256" }, h("code", { class: "sha256", text: image.sha256 || "" })),
              );
            }),
          ),
        ),
      );
    }

    function officialLink(version, target) {
      const upstream = String(app.overview.upstream_url || "").replace(/\/+$/, "");
      if (!/^https?:\/\//.test(upstream)) return () => "";
      return (image) => `${upstream}/${pathOf(version)}/targets/${target}/${encodeURIComponent(image.name)}`;
    }

    function storeLink(body) {
      // The Pages copy of build.json names each image's release download URL.
      return (image) => (/^https:\/\//.test(String(image.url || "")) ? image.url : `${api}/store/${body.bin_dir}/${encodeURIComponent(image.name)}`);
    }

    function fact(name, value) {
      return [h("dt", { text: name }), h("dd", {}, value)];
    }

    async function showDevice(version, target, profile, query, focus) {
      show(els.searchView, false);
      show(els.deviceView, true);
      const view = app.view;
      const file = `json/v1/${pathOf(version)}/targets/${target}/${profile.replace(/,/g, "_")}.json`;
      let device;
      try {
        if (!/^[a-z0-9][a-z0-9_-]*\/[a-z0-9][a-z0-9_-]*$/.test(target) || !/^[A-Za-z0-9][A-Za-z0-9_.,+-]*$/.test(profile)) {
          throw new HttpError(file, 400);
        }
        device = await getJSON(file);
      } catch (error) {
        if (view !== app.view) return;
        fail(`OpenWrt ${version} has no device “${profile}” for ${target} (${error.message}).`);
        history.replaceState(null, "", addressOf({ version }));
        showSearch(version, true);
        return;
      }
      if (view !== app.view) return;
      app.device = { ...device, version, target, path: pathOf(version) };
      app.defaults = defaultPackages(device);
      const name = (device.titles || []).map(titleText).filter(Boolean).join(" / ") || device.id;
      els.title.textContent = name;
      document.title = `${name} · ${siteTitle}`;
      els.facts.replaceChildren(
        ...fact("Version", `OpenWrt ${version}${device.version_code ? ` (${device.version_code})` : ""}`),
        ...fact("Target", target),
        ...fact("Profile", h("code", { text: device.id })),
      );
      const images = device.images || [];
      els.official.replaceChildren(
        images.length
          ? imagesTable(images, officialLink(version, target), `Official images of ${name}`)
          : h("p", { class: "hint", text: "OpenWrt publishes no images for this device." }),
      );
      fillForm(query);
      showMine();
      if (focus) els.title.focus();
    }

    function fillForm(query) {
      const limits = server();
      const shared = query.get("packages");
      els.packages.value = (shared !== null ? words(shared) : app.defaults).join(" ");
      els.defaults.value = "";
      show(els.defaultsField, limits.allow_defaults === true);
      const maxDefaults = Number(limits.max_defaults_length) || 0;
      if (maxDefaults) els.defaults.setAttribute("maxlength", String(maxDefaults));
      const systems = unique((app.device.images || []).map((i) => i.filesystem).filter((f) => f && f !== "initramfs"));
      els.filesystem.replaceChildren(
        h("option", { value: "", text: "Default" }),
        ...systems.map((f) => h("option", { value: f, text: f })),
      );
      els.filesystem.value = systems.includes(query.get("filesystem")) ? query.get("filesystem") : "";
      show(els.filesystemField, systems.length > 1);
      const maxRootfs = Number(limits.max_custom_rootfs_size_mb) || 0;
      show(els.rootfsField, maxRootfs > 0);
      els.rootfs.max = String(maxRootfs);
      els.rootfs.placeholder = `Default (up to ${maxRootfs})`;
      els.rootfs.value = /^\d+$/.test(query.get("rootfs_size_mb") || "") ? query.get("rootfs_size_mb") : "";
      for (const el of [els.packagesError, els.defaultsError, els.rootfsError]) show(el, false);
      els.formStatus.textContent = "";
      updateChanges();
    }

    function formAddress() {
      const list = words(els.packages.value);
      const { added, removed } = changes(list, app.defaults);
      const changed = added.length || removed.length || list.some((w) => w.startsWith("-"));
      return addressOf({
        version: app.device.version,
        target: app.device.target,
        profile: app.device.id,
        packages: changed ? list.join(" ") : "",
        filesystem: els.filesystem.value,
        rootfs_size_mb: els.rootfs.value.trim(),
      });
    }

    function updateChanges() {
      els.packagesChanges.textContent = describeChanges(words(els.packages.value), app.defaults);
    }

    function syncAddress() {
      clearTimeout(app.syncTimer);
      app.syncTimer = setTimeout(() => {
        if (app.device && !els.deviceView.hidden) history.replaceState(null, "", formAddress());
      }, 250);
    }

    function fieldError(el, input, message) {
      el.textContent = message;
      show(el, Boolean(message));
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
      return !message;
    }

    function readForm() {
      const list = words(els.packages.value);
      const bad = list.filter((w) => !PACKAGE_WORD.test(w));
      const limits = server();
      const okPackages = fieldError(
        els.packagesError,
        els.packages,
        bad.length ? `Not a package name: ${bad.join(", ")}` : "",
      );
      const script = els.defaults.value;
      const maxDefaults = Number(limits.max_defaults_length) || 0;
      const okDefaults = fieldError(
        els.defaultsError,
        els.defaults,
        maxDefaults && byteLength(script) > maxDefaults ? `The script is longer than ${maxDefaults} bytes.` : "",
      );
      const size = els.rootfs.value.trim();
      const maxRootfs = Number(limits.max_custom_rootfs_size_mb) || 0;
      const okRootfs = fieldError(
        els.rootfsError,
        els.rootfs,
        size && (!/^\d+$/.test(size) || Number(size) < 1 || Number(size) > maxRootfs)
          ? `Give a whole number from 1 to ${maxRootfs}, or leave it empty.`
          : "",
      );
      if (!(okPackages && okDefaults && okRootfs)) {
        const first = [els.packages, els.defaults, els.rootfs].find((el) => el.getAttribute("aria-invalid"));
        if (first) first.focus();
        return null;
      }
      const body = {
        version: app.device.version,
        target: app.device.target,
        profile: app.device.id,
        packages: list,
        diff_packages: true,
        client,
      };
      if (limits.allow_defaults === true && script.trim()) body.defaults = script;
      if (size) body.rootfs_size_mb = Number(size);
      if (els.filesystem.value) body.filesystem = els.filesystem.value;
      return body;
    }

    // --- builds ----------------------------------------------------------------

    async function call(method, path, body) {
      const init = { method, cache: "no-store", headers: { Accept: "application/json" } };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const response = await fetch(`${api}${path}`, init);
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      if (!data || typeof data !== "object") {
        data = { detail: `The server answered HTTP ${response.status} without a JSON body.` };
      }
      return { code: response.status, data, unknown: response.headers.get("X-Unknown-Package") || "" };
    }

    function stopWatching() {
      clearTimeout(app.timer);
      app.timer = 0;
    }

    function resetBuild() {
      stopWatching();
      app.generation += 1;
      els.build.replaceChildren();
      els.buildStatus.textContent = "";
      els.submit.disabled = false;
      els.submit.textContent = "Request build";
    }

    function busy(on) {
      els.submit.disabled = on;
      els.submit.textContent = on ? "Building…" : "Request build";
    }

    function announce(text) {
      els.buildStatus.textContent = text;
    }

    function hashField(hash) {
      const input = h("input", { class: "hash", readonly: true, value: hash, "aria-label": "Request hash", onfocus: (e) => e.target.select() });
      const note = h("span", { class: "status", role: "status" });
      const copy = h("button", {
        type: "button",
        class: "quiet small",
        text: "Copy",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(hash);
            note.textContent = "Copied.";
          } catch {
            input.focus();
            input.select();
            note.textContent = "Selected: press Ctrl+C to copy.";
          }
        },
      });
      return h("div", { class: "hash-row" }, h("span", { class: "label", text: "Request hash" }), input, copy, note);
    }

    function stepList(current) {
      const at = STEPS.findIndex(([key]) => key === current);
      return h(
        "ol",
        { class: "steps", "aria-hidden": "true" },
        STEPS.map(([key, label], i) => h("li", { class: i < at ? "done" : i === at ? "current" : "", "data-step": key, text: label })),
      );
    }

    function renderProgress(data, startedAt) {
      const step = String(data.imagebuilder_status || "init");
      const position = data.queue_position;
      const waiting = step === "init" && typeof position === "number";
      const label = waiting ? "Queued" : STEP_WORDS[step] || step;
      const where = waiting ? (position > 0 ? `${position} ${position === 1 ? "build" : "builds"} ahead of yours` : "next in line") : "";
      const seconds = Math.max(0, Math.round((Date.now() - startedAt) / 1000));
      els.build.replaceChildren(
        h(
          "div",
          { class: "panel progress", id: "build-progress", "data-step": step },
          h("p", { class: "state" }, h("span", { class: "spinner", "aria-hidden": "true" }), h("strong", { id: "build-step", text: label }), where ? h("span", { id: "queue-position", class: "muted", text: ` · ${where}` }) : null),
          stepList(step),
          h("p", { class: "muted small", text: `Waiting for ${seconds} s. The page checks every ${POLL_MS / 1000} s; you may leave it and come back, the build goes on.` }),
          data.request_hash ? hashField(data.request_hash) : null,
        ),
      );
      announce(where ? `${label}, ${where}.` : `${label}.`);
    }

    function renderDone(data) {
      const images = data.images || [];
      const heading = h("h3", { id: "result-title", tabindex: "-1", text: "Your image is ready" });
      const manifest = Object.entries(data.manifest || {});
      const summary = describeRequest(data.request || {}, app.defaults);
      els.build.replaceChildren(
        h(
          "div",
          { class: "panel ok", id: "build-result" },
          heading,
          h("p", { class: "muted" }, [`OpenWrt ${data.version_number || app.device.version}`, data.version_code, data.target, data.id].filter(Boolean).join(" · "), data.build_at ? ` · built ${when(data.build_at)}` : ""),
          summary ? h("p", { class: "changes", text: summary }) : null,
          images.length ? imagesTable(images, storeLink(data), "Images of this build") : h("p", { text: "The build produced no image." }),
          hashField(String(data.request_hash || "")),
          manifest.length
            ? h(
                "details",
                { class: "manifest" },
                h("summary", { text: `Installed packages (${manifest.length})` }),
                h("ul", { class: "columns" }, manifest.map(([name, version]) => h("li", {}, h("code", { text: name }), ` ${version}`))),
              )
            : null,
        ),
      );
      announce("The image is ready.");
      heading.focus();
    }

    function logBlock(name, text) {
      if (!text) return null;
      return h("details", { class: "log" }, h("summary", { text: `${name} (last lines)` }), h("pre", { text: tail(text, LOG_LINES) }));
    }

    function renderFailed(data) {
      const heading = h("h3", { id: "result-title", tabindex: "-1", text: "The build failed" });
      els.build.replaceChildren(
        h(
          "div",
          { class: "panel bad", id: "build-error" },
          heading,
          h("p", { class: "detail", text: String(data.detail || "No reason was given.") }),
          logBlock("Output", data.stdout),
          logBlock("Errors", data.stderr),
          data.request_hash ? hashField(String(data.request_hash)) : null,
        ),
      );
      announce("The build failed.");
      heading.focus();
    }

    function renderRejected(code, data, unknown) {
      const heading = h("h3", { id: "result-title", tabindex: "-1", text: code === 422 ? "Unknown packages" : "The request was not accepted" });
      const names = unknown.split(",").map((s) => s.trim()).filter(Boolean);
      els.build.replaceChildren(
        h(
          "div",
          { class: "panel bad", id: "build-error" },
          heading,
          h("p", { class: "detail", text: String(data.detail || `HTTP ${code}`) }),
          names.length ? h("p", {}, "Not available for this device: ", names.map((n, i) => [i ? ", " : "", h("code", { class: "unknown", text: n })])) : null,
        ),
      );
      announce(code === 422 ? "Some packages are unknown." : "The request was not accepted.");
      heading.focus();
    }

    function handle(reply, entry, generation, startedAt) {
      if (generation !== app.generation) return;
      const { code, data } = reply;
      if (code === 202) {
        const hash = String(data.request_hash || entry.hash || "");
        if (!REQUEST_HASH.test(hash)) {
          busy(false);
          renderRejected(code, { detail: "The server did not name the request; try again later." }, "");
          return;
        }
        if (!entry.hash) rememberBuild({ ...entry, hash });
        renderProgress({ ...data, request_hash: hash }, startedAt);
        stopWatching();
        app.timer = setTimeout(() => poll({ ...entry, hash }, generation, startedAt), POLL_MS);
        return;
      }
      busy(false);
      if (code === 200) {
        const hash = String(data.request_hash || entry.hash || "");
        if (REQUEST_HASH.test(hash)) rememberBuild({ ...entry, hash });
        renderDone(data);
      } else if (code === 500 && (data.stdout !== undefined || data.stderr !== undefined || data.imagebuilder_status === "failed")) {
        if (entry.hash) forgetBuild(entry.hash);
        renderFailed(data);
      } else if (code === 404 && entry.hash) {
        forgetBuild(entry.hash);
        renderRejected(code, { detail: "The server no longer knows this request. Request the build again." }, "");
      } else {
        renderRejected(code, data, reply.unknown);
      }
    }

    async function poll(entry, generation, startedAt) {
      if (generation !== app.generation) return;
      let reply;
      try {
        reply = await call("GET", `/api/v1/build/${entry.hash}`);
      } catch {
        if (generation !== app.generation) return;
        announce("The build server cannot be reached; trying again.");
        app.timer = setTimeout(() => poll(entry, generation, startedAt), POLL_MS * 2);
        return;
      }
      handle(reply, entry, generation, startedAt);
    }

    async function submit(event) {
      event.preventDefault();
      const body = readForm();
      if (!body) return;
      resetBuild();
      const generation = app.generation;
      const startedAt = Date.now();
      busy(true);
      history.replaceState(null, "", formAddress());
      renderProgress({ imagebuilder_status: "init" }, startedAt);
      announce("Sending the request.");
      const entry = { version: body.version, target: body.target, profile: body.profile, packages: body.packages, at: startedAt };
      let reply;
      try {
        reply = await call("POST", "/api/v1/build", body);
      } catch (error) {
        if (generation !== app.generation) return;
        busy(false);
        renderRejected(0, { detail: `The build server cannot be reached (${error.message}).` }, "");
        return;
      }
      handle(reply, entry, generation, startedAt);
    }

    function follow(entry) {
      resetBuild();
      busy(true);
      const startedAt = Date.now();
      renderProgress({ imagebuilder_status: "init", request_hash: entry.hash }, startedAt);
      els.build.scrollIntoView({ block: "nearest" });
      poll(entry, app.generation, startedAt);
    }

    async function showMine() {
      const device = app.device;
      const mine = savedBuilds().filter((e) => e.version === device.version && e.target === device.target && e.profile === device.id);
      els.mineList.replaceChildren();
      show(els.mine, false);
      const view = app.view;
      const replies = await Promise.all(
        mine.map((entry) =>
          call("GET", `/api/v1/build/${entry.hash}`).then(
            (reply) => [entry, reply],
            () => [entry, null],
          ),
        ),
      );
      if (view !== app.view) return;
      const cards = [];
      for (const [entry, reply] of replies) {
        if (!reply) continue;
        const request = (reply.code === 200 && reply.data.request) || { packages: entry.packages };
        const head = h("p", { class: "changes" }, entry.at ? `Requested ${when(entry.at / 1000)}. ` : "", describeRequest(request, app.defaults));
        if (reply.code === 200) {
          cards.push(h("div", { class: "earlier" }, head, imagesTable(reply.data.images || [], storeLink(reply.data), "Images of an earlier build"), hashField(entry.hash)));
        } else if (reply.code === 202) {
          cards.push(h("div", { class: "earlier" }, head, h("p", {}, "Still being built. ", h("button", { type: "button", class: "quiet small", text: "Follow it", onclick: () => follow(entry) }))));
        } else {
          forgetBuild(entry.hash);
        }
      }
      els.mineList.replaceChildren(...cards);
      show(els.mine, cards.length > 0);
    }

    async function share() {
      const address = new URL(formAddress(), location.href).href;
      history.replaceState(null, "", formAddress());
      try {
        await navigator.clipboard.writeText(address);
        els.formStatus.textContent = "Link copied.";
      } catch {
        els.formStatus.textContent = "The link is in the address bar.";
      }
    }

    // --- routing -----------------------------------------------------------------

    function route(focus) {
      clearAlert();
      resetBuild();
      app.view += 1;
      const query = params();
      const version = currentVersion();
      const asked = query.get("version");
      if (asked && asked !== version) fail(`OpenWrt ${asked} is not offered here; this is ${version}.`);
      els.version.value = version;
      els.back.href = addressOf({ version: version === app.stable ? "" : version });
      const target = query.get("target");
      const profile = query.get("profile");
      if (target && profile) showDevice(version, target, profile, query, focus);
      else showSearch(version, focus);
    }

    async function changeVersion() {
      const version = els.version.value;
      if (!els.deviceView.hidden && app.device) {
        const id = app.device.id;
        const target = app.device.target;
        let entries = [];
        try {
          entries = (await indexOf(version)).entries;
        } catch {
          entries = [];
        }
        if (entries.some((e) => e.id === id && e.target === target)) {
          go({ version, target, profile: id });
          return;
        }
        go({ version });
        fail(`OpenWrt ${version} has no image for ${els.title.textContent}; pick the device again.`);
        return;
      }
      history.pushState(null, "", addressOf({ version }));
      showSearch(version, true);
    }

    // --- wiring --------------------------------------------------------------

    els.search.addEventListener("input", updateResults);
    els.search.addEventListener("keydown", onSearchKey);
    els.search.addEventListener("blur", closeResults);
    els.search.addEventListener("focus", () => {
      if (els.search.value.trim()) updateResults();
    });
    els.version.addEventListener("change", changeVersion);
    els.back.addEventListener("click", (event) => {
      event.preventDefault();
      go({ version: currentVersion() === app.stable ? "" : currentVersion() });
    });
    $("home").addEventListener("click", (event) => {
      event.preventDefault();
      els.search.value = "";
      go({});
    });
    els.packages.addEventListener("input", () => {
      updateChanges();
      syncAddress();
    });
    els.filesystem.addEventListener("change", syncAddress);
    els.rootfs.addEventListener("input", syncAddress);
    els.reset.addEventListener("click", () => {
      els.packages.value = app.defaults.join(" ");
      updateChanges();
      syncAddress();
      els.packages.focus();
    });
    els.share.addEventListener("click", share);
    els.form.addEventListener("submit", submit);
    window.addEventListener("popstate", () => route(false));

    loadVersions().then(
      () => {
        if (!app.versions.length) {
          fail("This server offers no OpenWrt version yet.");
          els.hint.textContent = "";
          return;
        }
        route(true);
      },
      (error) => {
        els.hint.textContent = "";
        fail(`The index of this server cannot be loaded (${error.message}). It may not have been rendered yet.`);
      },
    );
  }

  start();
})();
