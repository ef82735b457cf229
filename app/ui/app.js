// The baihua playground: plain browser JavaScript against the service's own HTTP API.
"use strict";

// The page lives at <root>/ui/, so the API is one level up (also behind a path prefix).
const API_ROOT = new URL("../", document.baseURI);
const KEY_STORAGE = "baihua-api-key";

const $ = (id) => document.getElementById(id);

/** The server's error as one line: FastAPI's `detail` (a string or a list of field errors,
 * whose messages start with the field) or OpenAI's `error.message`, prefixed with the status. */
async function errorMessage(response) {
  const text = await response.text();
  let message = text.trim();
  try {
    const body = JSON.parse(text);
    if (typeof body.detail === "string") {
      message = body.detail;
    } else if (Array.isArray(body.detail)) {
      message = body.detail.map((e) => e.msg).join("; ");
    } else if (body.error && body.error.message) {
      message = body.error.message;
    }
  } catch (_) {
    // not JSON: show the text as it came
  }
  const status = `${response.status}${response.statusText ? " " + response.statusText : ""}`;
  return `${status}: ${message || "(no message)"}`;
}

/** GET (no body) or POST JSON to a route; resolves to the JSON answer, throws the server's
 * error message otherwise. */
async function api(path, body) {
  const headers = { Accept: "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method: body === undefined ? "GET" : "POST", headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, API_ROOT), init);
  } catch (err) {
    throw new Error(`could not reach the server: ${err.message}`);
  }
  if (!response.ok) {
    throw new Error(await errorMessage(response));
  }
  return response.json();
}

function dot(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

/** Runs `work(isLatest)` for a panel: its buttons disabled meanwhile, the error of the latest
 * run shown in the panel. */
function panel(name, work) {
  const form = $(`${name}-form`);
  const error = $(`${name}-error`);
  let latest = 0;
  const run = async (event) => {
    if (event) event.preventDefault();
    const mine = ++latest;
    const buttons = form ? form.querySelectorAll("button") : [];
    buttons.forEach((b) => (b.disabled = true));
    error.hidden = true;
    error.textContent = "";
    try {
      await work(() => mine === latest);
    } catch (err) {
      if (mine === latest) {
        // an older run's failure is stale once a newer run started
        error.textContent = err.message;
        error.hidden = false;
      }
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  };
  if (form) form.addEventListener("submit", run);
  return run;
}

// ------------------------------------------------------------------------------------ search

/** The fusion the form asks for, as /search takes it. */
function fusionChoice() {
  const method = $("fusion").value;
  if (method === "rrf") return { method, k: Number.parseFloat($("rrf-k").value) };
  return { method, weight: Number.parseFloat($("weight").value) };
}

function fusionName(fusion) {
  return fusion.method === "rrf" ? `RRF k=${fusion.k}` : `weighted ${fusion.weight}`;
}

async function search() {
  const started = performance.now();
  const query = $("query").value;
  const topK = Number.parseInt($("top-k").value, 10);
  const mode = $("mode").value;
  const whiten = $("whiten").checked;
  const rerank = $("rerank").checked;
  const status = $("search-status");
  if (!whiten && rerank) {
    throw new Error(
      "geodesic re-ranking ranks by the index's (whitened) vectors: turn whitening on, " +
        "or re-ranking off"
    );
  }
  if (!whiten && mode !== "dense") {
    throw new Error(
      "whitening off re-scores the dense candidates by raw cosine: choose the dense mode, " +
        "or turn whitening on"
    );
  }
  if (rerank && mode === "sparse") {
    throw new Error(
      "geodesic re-ranking re-ranks the dense candidates, and sparse mode has none: choose " +
        "dense or hybrid, or turn re-ranking off"
    );
  }
  // Results of an earlier query must not stand under this one's error.
  $("results").hidden = true;
  status.textContent = "searching…";
  // Without whitening, a wider candidate list from the index is re-scored by raw cosine.
  const fetchK = whiten ? topK : Math.min(Math.max(4 * topK, 40), 255);
  const body = { query, top_k: fetchK, mode, rerank: rerank ? "geodesic" : "none" };
  if (mode === "hybrid") body.fusion = fusionChoice();
  let found;
  let hits;
  try {
    found = await api("search", body);
    hits = found.results;
    if (!whiten && hits.length) {
      const [q, docs] = await Promise.all([
        api("embed", { texts: [query], whiten: false, text_type: "query" }),
        api("embed", { texts: hits.map((h) => h.text), whiten: false, text_type: "passage" }),
      ]);
      hits.forEach((hit, i) => (hit.raw = dot(q.embeddings[0], docs.embeddings[i])));
      hits = hits.sort((a, b) => b.raw - a.raw).slice(0, topK);
    }
  } catch (err) {
    status.textContent = "";
    if (err.message.startsWith("422") && err.message.includes("BM25 index")) {
      modesUnavailable(err.message);
    }
    throw err;
  }
  renderHits(hits, whiten, rerank, mode);
  const ms = performance.now() - started;
  const table = $("results");
  table.dataset.ms = ms.toFixed(1);
  table.dataset.mode = mode;
  let text = `${hits.length} result${hits.length === 1 ? "" : "s"} in ${ms.toFixed(0)} ms`;
  text += mode === "hybrid" ? ` (hybrid, ${fusionName(body.fusion)})` : ` (${mode})`;
  if (!whiten) text += ` (the index's best ${fetchK}, re-ranked by raw cosine)`;
  if (found.truncated) text += "; the query was truncated at the model's token limit";
  status.textContent = text;
}

const SCORE_HEADS = { dense: "cosine", sparse: "BM25", hybrid: "fused score" };

/** A rank or a score of one side of a hybrid search; "—" where that side did not return it. */
function side(value, digits) {
  if (value == null) return "—";
  return digits === undefined ? String(value) : value.toFixed(digits);
}

function renderHits(hits, whiten, rerank, mode) {
  const table = $("results");
  table.classList.toggle("show-raw", !whiten);
  table.classList.toggle("show-geodesic", rerank);
  table.classList.toggle("show-ranks", mode !== "dense");
  $("score-head").textContent = SCORE_HEADS[mode];
  const body = table.tBodies[0];
  body.replaceChildren();
  hits.forEach((hit, i) => {
    const row = body.insertRow();
    row.dataset.id = hit.id;
    cell(row, String(i + 1));
    cell(row, String(hit.id), "id");
    cell(row, hit.score.toFixed(4), "score");
    cell(row, hit.raw === undefined ? "" : hit.raw.toFixed(4), "raw");
    cell(row, hit.geodesic == null ? "" : hit.geodesic.toFixed(4), "geodesic");
    cell(row, side(hit.dense_rank), "ranks dense-rank");
    cell(row, side(hit.dense_score, 4), "ranks dense-score");
    cell(row, side(hit.sparse_rank), "ranks sparse-rank");
    cell(row, side(hit.sparse_score, 4), "ranks sparse-score");
    cell(row, hit.text, "text");
    cell(row, Object.keys(hit.payload).length ? JSON.stringify(hit.payload) : "", "payload");
  });
  table.hidden = false;
}

// ------------------------------------------------------------------------------ search modes

/** Sparse and hybrid need the server's BM25 index (not on Milvus): without it their choices
 * are disabled, with the server's own reason beside them. */
function modesUnavailable(reason) {
  const select = $("mode");
  for (const option of select.options) {
    if (option.value !== "dense") {
      option.disabled = true;
      option.title = reason;
    }
  }
  select.value = "dense";
  const note = $("mode-note");
  note.textContent = `sparse and hybrid search are not available here: ${reason}`;
  note.hidden = false;
  showFusion();
}

/** Asks the server once for a one-hit BM25 search (no encoding involved): a 422 naming the
 * BM25 index means there is none; other failures (a wrong key) leave the choice open. */
async function checkModes() {
  try {
    await api("search", { query: "探测", top_k: 1, mode: "sparse" });
  } catch (err) {
    if (err.message.startsWith("422") && err.message.includes("BM25 index")) {
      modesUnavailable(err.message);
    }
  }
}

function showFusion() {
  const options = $("fusion-options");
  options.hidden = $("mode").value !== "hybrid";
  options.dataset.method = $("fusion").value;
}

// ------------------------------------------------------------------------------ add documents

async function addDocuments() {
  const texts = $("documents")
    .value.split("\n")
    .map((line) => line.trim())
    .filter((line) => line);
  if (!texts.length) throw new Error("documents: write at least one non-empty line");
  let payload = {};
  const raw = $("payload").value.trim();
  if (raw) {
    try {
      payload = JSON.parse(raw);
    } catch (err) {
      throw new Error(`payload: not valid JSON (${err.message})`);
    }
    if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
      throw new Error('payload: must be a JSON object, e.g. {"lang": "zh"}');
    }
  }
  const documents = texts.map((text) => ({ text, payload }));
  const written = await api("documents", { documents });
  const cut = written.truncated.filter((t) => t).length;
  let text = `added ${written.ids.length} document${written.ids.length === 1 ? "" : "s"}: ` +
    `id ${written.ids.join(", ")}`;
  if (cut) text += `; ${cut} truncated at the model's token limit`;
  $("add-status").textContent = text;
  $("documents").value = "";
}

// ------------------------------------------------------------------------------------ compare

async function compare() {
  const texts = [$("text-a").value, $("text-b").value];
  const [whitened, raw] = await Promise.all([
    api("embed", { texts, whiten: true }),
    api("embed", { texts, whiten: false }),
  ]);
  const show = (name, answer) => {
    const cos = dot(answer.embeddings[0], answer.embeddings[1]);
    $(`cos-${name}`).textContent = `${cos.toFixed(4)}  (${answer.dim} dims)`;
    $(`bar-${name}`).value = cos;
  };
  show("raw", raw);
  show("whitened", whitened);
  $("compare").hidden = false;
}

// --------------------------------------------------------------------------------------- info

function definition([key, value]) {
  const dt = document.createElement("dt");
  dt.textContent = key;
  const dd = document.createElement("dd");
  if (value === null) dd.textContent = "none";
  else if (typeof value !== "object") dd.textContent = String(value);
  else dd.textContent = Object.entries(value).map(([k, v]) => `${k}=${v}`).join(", ");
  return [dt, dd];
}

async function showInfo(isLatest) {
  const entries = [];
  const ready = await fetch(new URL("readyz", API_ROOT)).then((r) => r.json()).catch(() => null);
  entries.push(["status", ready ? ready.status : "unreachable"]);
  try {
    entries.push(...Object.entries(await api("info")));
  } finally {
    // Replaced in one step by the latest refresh only, so overlapping ones never mix.
    if (isLatest()) $("info").replaceChildren(...entries.flatMap(definition));
  }
}

// ------------------------------------------------------------------------------------- set-up

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  const refreshInfo = panel("info", showInfo);
  key.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    refreshInfo();
    checkModes();
  });
  $("mode").addEventListener("change", showFusion);
  $("fusion").addEventListener("change", showFusion);
  showFusion();
  checkModes();
  $("info-refresh").addEventListener("click", refreshInfo);
  panel("search", search);
  panel("add", addDocuments);
  panel("compare", compare);
  refreshInfo();
}

init();
