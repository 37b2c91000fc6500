// The submit page: the text is read on the server (YAML or JSON, with the line of every
// field), then posted to the API, which validates it with the spec's pydantic model.
// Each 422 error is shown next to what it names: a form field, or the spec's line.
"use strict";

(() => {
  const form = document.getElementById("submit-form");
  const spec = document.getElementById("spec");
  const box = document.getElementById("spec-errors");
  const formErrors = document.getElementById("form-errors");
  const button = document.getElementById("submit-button");
  const examples = JSON.parse(document.getElementById("examples").textContent);
  const FIELDS = ["name", "priority", "labels"];

  document.getElementById("example").addEventListener("change", (ev) => {
    if (ev.target.value && examples[ev.target.value] !== undefined) spec.value = examples[ev.target.value];
  });
  document.getElementById("spec-file").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    if (file.size > 1000000) {
      showForm([`${file.name} is larger than 1 MB`]);
      return;
    }
    const reader = new FileReader();
    reader.onload = () => { spec.value = String(reader.result); };
    reader.onerror = () => showForm([`${file.name} could not be read`]);
    reader.readAsText(file);
  });

  function clear() {
    box.replaceChildren();
    spec.removeAttribute("aria-invalid");
    formErrors.hidden = true;
    formErrors.replaceChildren();
    for (const f of FIELDS) {
      const p = document.getElementById(`${f}-error`);
      p.hidden = true;
      p.textContent = "";
      document.getElementById(f).removeAttribute("aria-invalid");
    }
  }

  function showForm(messages) {
    formErrors.replaceChildren(RK.el("p", { text: "The job was not submitted:" }),
      RK.el("ul", {}, messages.map((m) => RK.el("li", { text: m }))));
    formErrors.hidden = false;
  }

  function showField(field, msg) {
    const p = document.getElementById(`${field}-error`);
    p.textContent = p.textContent ? `${p.textContent} ${msg}` : msg;
    p.hidden = false;
    document.getElementById(field).setAttribute("aria-invalid", "true");
  }

  function lineOf(path, lines) {
    // the longest prefix of the error's path that the text has a line for
    for (let n = path.length; n > 0; n--) {
      const key = path.slice(0, n).join(".");
      if (lines[key]) return { line: lines[key], matched: key };
    }
    return null;
  }

  function showSpec(errors, text, lines) {
    // errors: [{path: [..] | null, line: n | null, msg}]
    spec.setAttribute("aria-invalid", "true");
    const src = text.split("\n");
    const general = [];
    const byLine = new Map();
    for (const e of errors) {
      const at = e.line ? { line: e.line, matched: null } : (e.path ? lineOf(e.path, lines) : null);
      if (!at || at.line > src.length) { general.push(e); continue; }
      if (!byLine.has(at.line)) byLine.set(at.line, []);
      byLine.get(at.line).push(e);
    }
    const count = errors.length;
    const parts = [RK.el("h3", { text: `${count} problem${count > 1 ? "s" : ""} in the spec` })];
    if (general.length) {
      parts.push(RK.el("ul", { cls: "general" }, general.map((e) => RK.el("li", {},
        RK.el("p", { cls: "field-error", "data-field": (e.path || []).join("."), text: label(e) })))));
    }
    if (byLine.size) {
      const show = new Set();
      for (const l of byLine.keys()) for (let k = l - 1; k <= l + 1; k++) if (k >= 1 && k <= src.length) show.add(k);
      const nums = [...show].sort((a, b) => a - b);
      const items = [];
      nums.forEach((n, i) => {
        if (i && n !== nums[i - 1] + 1) items.push(RK.el("li", { cls: "gap", "aria-hidden": "true", text: "…" }));
        const errs = byLine.get(n);
        const li = RK.el("li", { value: n, "data-line": n, cls: errs ? "has-error" : "" },
          RK.el("code", { text: src[n - 1] || " " }));
        if (errs) {
          li.dataset.field = errs[0].path ? errs[0].path.join(".") : "";
          li.append(RK.el("button", { type: "button", cls: "link goto", "data-line": n, text: `Go to line ${n}` }));
          for (const e of errs) {
            li.append(RK.el("p", { cls: "field-error", "data-field": (e.path || []).join("."), text: label(e) }));
          }
        }
        items.push(li);
      });
      parts.push(RK.el("ol", { cls: "spec-lines" }, items));
    }
    box.replaceChildren(...parts);
    box.dataset.text = text;
  }

  function label(e) {
    return (e.path && e.path.length ? e.path.join(".") + ": " : "") + e.msg;
  }

  box.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.goto");
    if (!b) return;
    const n = parseInt(b.dataset.line, 10);
    const lines = spec.value.split("\n");
    let start = 0;
    for (let i = 0; i < n - 1 && i < lines.length; i++) start += lines[i].length + 1;
    spec.focus();
    spec.setSelectionRange(start, start + (lines[n - 1] || "").length);
    const lh = parseFloat(getComputedStyle(spec).lineHeight) || 18;
    spec.scrollTop = Math.max(0, (n - 3) * lh);
  });

  function labels(text) {
    const out = {};
    for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
      const i = part.indexOf("=");
      if (i < 1) throw new Error(`"${part}": expected key=value`);
      out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
    }
    return out;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear();
    const text = spec.value;
    const body = {};
    const name = document.getElementById("name").value.trim();
    if (name) body.name = name;
    const priority = document.getElementById("priority").value.trim();
    if (priority !== "") body.priority = Number(priority);
    try {
      const l = labels(document.getElementById("labels").value);
      if (Object.keys(l).length) body.labels = l;
    } catch (err) {
      showField("labels", err.message);
      return;
    }
    button.disabled = true;
    button.textContent = "Checking…";
    try {
      const parsed = await RK.api("POST", "/web/parse-spec", { text });
      if (!parsed.ok) {
        const d = parsed.data && parsed.data.detail;
        if (Array.isArray(d)) showSpec(d.map((e) => ({ path: null, line: e.line, msg: e.msg })), text, {});
        else showForm([RK.message(parsed.data)]);
        return;
      }
      body.spec = parsed.data.spec;
      const r = await RK.api("POST", "/api/v1/jobs", body);
      if (r.ok) {
        button.textContent = "Submitted";
        location.assign(`/jobs/${encodeURIComponent(r.data.id)}`);
        return;
      }
      report(r, text, parsed.data.lines);
    } finally {
      if (button.textContent !== "Submitted") {
        button.disabled = false;
        button.textContent = "Submit";
      }
    }
  });

  function report(r, text, lines) {
    const d = r.data && r.data.detail;
    const specErrors = [], other = [];
    const items = Array.isArray(d) ? d : [{ loc: null, msg: RK.message(r.data) }];
    for (const e of items) {
      let loc = e.loc ? e.loc.map(String) : null;
      let msg = String(e.msg || "").replace(/^Value error, /, "");
      if (e.input !== undefined && e.input !== null && typeof e.input !== "object") msg += ` (got ${JSON.stringify(e.input)})`;
      if (!loc && r.status === 422) {
        // a policy error names its field first: "data.dataset='/x' is outside ...", "labels.k: ..."
        const m = /^([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*[=:]/.exec(msg);
        if (m) loc = ["body", ...(m[1].startsWith("labels") ? [m[1]] : ["spec", ...m[1].split(".")])];
      }
      if (loc && loc[0] === "body") loc = loc.slice(1);
      if (loc && loc[0] === "spec") specErrors.push({ path: loc.slice(1), line: null, msg });
      else if (loc && FIELDS.includes(loc[0].split(".")[0])) showField(loc[0].split(".")[0], `${loc.join(".")}: ${msg}`);
      else other.push((loc && loc.length ? loc.join(".") + ": " : "") + msg);
    }
    if (specErrors.length) showSpec(specErrors, text, lines);
    if (other.length) showForm(other);
    const first = document.querySelector(".spec-lines .has-error, .field-error:not([hidden]), #form-errors:not([hidden])");
    if (first) first.scrollIntoView({ block: "center", behavior: "smooth" });
  }
})();
