// The node's live status page: everything comes from this node's public API (same origin), polled once a second,
// and the signed heads from its head stream. No build step, no library.
"use strict";
const $ = (selector) => document.querySelector(selector);
const WINDOW_MS = 120000;
const rates = [];    // {t, value}: tx/s ordered, from the sequencer_txs_ordered counter of /metrics
const heads = [];    // {t, value}: a signed head's cut→signed ms, from the head stream
const posts = [];    // {t, value}: signed→posted ms, from the L1 histogram's newest observations
let lastCounter = null;
let stream = null;

async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) {
    const error = new Error(`${path}: HTTP ${response.status}`);
    error.status = response.status;
    try { error.body = await response.json(); } catch { /* not JSON */ }
    throw error;
  }
  return path === "/metrics" ? response.text() : response.json();
}

function text(id, value) { const element = document.getElementById(id); if (element) element.textContent = value; }
function cell(row, value, className) { const td = row.insertCell(); td.textContent = value; if (className) td.className = className; return td; }
function short(hex) { return typeof hex === "string" && hex.length > 20 ? `${hex.slice(0, 10)}…${hex.slice(-8)}` : hex; }
function trim(series, now) { while (series.length > 0 && series[0].t < now - WINDOW_MS) series.shift(); }

// Sums a Prometheus counter over its label sets.
function counter(metrics, name) {
  let total = null;
  for (const line of metrics.split("\n")) {
    if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{")) {
      const value = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (Number.isFinite(value)) total = (total ?? 0) + value;
    }
  }
  return total;
}

async function refresh() {
  const now = Date.now();
  try {
    const cluster = await get("/v1/cluster");
    text("node-id", `${cluster.nodeId} (${cluster.role})`);
    text("height-ordered", cluster.height);
    text("height-signed", cluster.signedThrough);
    text("term", cluster.term);
    text("commit", cluster.commitIndex);
    text("applied", cluster.appliedIndex);
    const body = $("#members tbody");
    body.replaceChildren();
    for (const member of cluster.members) {
      const row = body.insertRow();
      row.dataset.member = member.id;
      const role = member.id === cluster.leader ? "leader" : cluster.leader == null ? "unknown" : "follower";
      cell(row, member.id + (member.id === cluster.nodeId ? " (this node)" : ""));
      cell(row, role, role === "leader" ? "leader" : "");
      cell(row, member.api);
      cell(row, member.raft);
    }
    if (stream === null) openStream(BigInt(cluster.signedThrough) + 1n);

    try {
      const l1 = await get("/v1/l1");
      text("height-posted", l1.postedHeight);
      text("height-finalized", l1.finalizedHeight);
    } catch (error) {
      text("height-posted", error.status === 404 ? "no L1" : "?");
      text("height-finalized", error.status === 404 ? "no L1" : "?");
    }

    const signing = await get("/v1/signing");
    text("key-epoch", (signing.keyEpoch ?? "none") + (signing.pendingKeyEpoch ? ` (epoch ${signing.pendingKeyEpoch} made, waiting for its hand-over)` : ""));
    const signers = $("#signers tbody");
    signers.replaceChildren();
    for (const signer of signing.signers ?? []) {
      const row = signers.insertRow();
      row.dataset.signer = signer.id;
      cell(row, signer.id);
      cell(row, signer.sharesAccepted);
      cell(row, signer.badShares, signer.badShares > 0 ? "bad" : "");
      cell(row, signer.offences, signer.offences > 0 ? "bad" : "");
      cell(row, signer.timeouts);
      cell(row, signer.excludedForMs, signer.excludedForMs > 0 ? "bad" : "");
      cell(row, signer.shareLatencyMs);
      cell(row, signer.publishedNonces);
    }

    const metrics = await get("/metrics");
    const ordered = counter(metrics, "sequencer_txs_ordered_total");
    if (ordered !== null) {
      if (lastCounter !== null && now > lastCounter.t) rates.push({ t: now, value: Math.max(0, (ordered - lastCounter.value) * 1000 / (now - lastCounter.t)) });
      lastCounter = { t: now, value: ordered };
    }
    const postedSum = counter(metrics, "sequencer_l1_signed_to_posted_milliseconds_sum");
    const postedCount = counter(metrics, "sequencer_l1_signed_to_posted_milliseconds_count");
    if (postedCount !== null && postedCount > 0) {
      const previous = refresh.posted;
      if (previous && postedCount > previous.count) posts.push({ t: now, value: (postedSum - previous.sum) / (postedCount - previous.count) });
      refresh.posted = { sum: postedSum, count: postedCount };
    }
    text("rate", rates.length > 0 ? rates[rates.length - 1].value.toFixed(0) : "–");
    text("status", `updated ${new Date(now).toLocaleTimeString()}`);
  } catch (error) {
    text("status", `cannot read this node: ${error.message}`);
  }
  trim(rates, now); trim(heads, now); trim(posts, now);
  draw(now);
}

// Signed heads as they are signed: cut (the header's timestamp) to signed (the verification on the leader).
function openStream(from) {
  stream = new EventSource(`/v1/stream/heads?from=${from}`);
  stream.addEventListener("head", (event) => {
    const head = JSON.parse(event.data);
    const latency = head.signedAtMs != null ? head.signedAtMs - Number(head.header.timestampMs) : null;
    if (latency !== null) heads.push({ t: Date.now(), value: Math.max(0, latency) });
    text("last-head", head.header.height);
    text("last-latency", latency ?? "–");
    $("#chart").dataset.heads = String(Number($("#chart").dataset.heads) + 1);
  });
  stream.onerror = () => { stream.close(); stream = null; }; // reopened by the next refresh
}

function draw(now) {
  const canvas = $("#chart");
  const context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, left = 50, right = 50, top = 10, bottom = 20;
  context.clearRect(0, 0, width, height);
  context.font = "11px sans-serif";
  context.strokeStyle = "#ccc";
  context.strokeRect(left, top, width - left - right, height - top - bottom);
  const x = (t) => left + (t - (now - WINDOW_MS)) / WINDOW_MS * (width - left - right);
  const scale = (series) => Math.max(1, ...series.map((p) => p.value)) * 1.1;
  const maxRate = scale(rates), maxLatency = scale([...heads, ...posts]);
  const line = (series, max, color, dots) => {
    context.strokeStyle = color; context.fillStyle = color; context.beginPath();
    series.forEach((p, i) => {
      const px = x(p.t), py = height - bottom - p.value / max * (height - top - bottom);
      if (dots) context.fillRect(px - 1.5, py - 1.5, 3, 3); else if (i === 0) context.moveTo(px, py); else context.lineTo(px, py);
    });
    if (!dots) context.stroke();
  };
  line(rates, maxRate, "#1f77b4", false);
  line(heads, maxLatency, "#d62728", true);
  line(posts, maxLatency, "#2ca02c", true);
  context.fillStyle = "#1f77b4"; context.fillText(maxRate.toFixed(0), 4, top + 10); context.fillText("0", 4, height - bottom);
  context.fillStyle = "#d62728"; context.fillText(`${maxLatency.toFixed(0)} ms`, width - right + 4, top + 10);
  context.fillStyle = "#777"; context.fillText("−2 min", left, height - 4); context.fillText("now", width - right - 20, height - 4);
  canvas.dataset.points = String(rates.length);
}

// A tx's ladder (the level each node claims, with times) and its proofs, from /v1/txs and /v1/proofs.
async function lookup(event) {
  event.preventDefault();
  const hash = $("#tx-hash").value.trim().toLowerCase();
  const result = $("#tx-result");
  result.replaceChildren();
  if (!/^0x[0-9a-f]{64}$/.test(hash)) { result.textContent = "a tx hash is 0x and 64 hex digits"; return; }
  try {
    const [tx, bundle] = await Promise.all([get(`/v1/txs/${hash}`), get(`/v1/proofs/${hash}`)]);
    const levels = ["received", "ordered", "signed", "posted", "finalized"];
    const ladder = document.createElement("ul");
    ladder.id = "ladder";
    for (const level of levels) {
      const item = document.createElement("li");
      const reached = levels.indexOf(level) <= levels.indexOf(tx.level);
      item.dataset.level = level;
      item.dataset.reached = String(reached);
      if (level === tx.level) item.className = "current";
      const at = tx.times?.[level];
      item.textContent = at ? `${level} ${new Date(at).toLocaleTimeString()}` : level;
      ladder.append(item);
    }
    result.append(ladder);
    const facts = document.createElement("dl");
    const add = (name, value) => { const dt = document.createElement("dt"); dt.textContent = name; const dd = document.createElement("dd"); const code = document.createElement("code"); code.textContent = value; dd.append(code); facts.append(dt, dd); };
    add("position", `height ${tx.height}, index ${tx.index}`);
    add("tx proof (to txRoot)", tx.proof.length === 0 ? "(the only tx)" : tx.proof.map(short).join(" "));
    add("header commitment", bundle.commitment);
    if (bundle.head) {
      add("covering signed head", `height ${bundle.head.header.height}, key epoch ${bundle.head.keyEpoch}, signers ${bundle.head.signers.join(", ")}`);
      add("head signature", `R ${bundle.head.signature.R} z ${bundle.head.signature.z}`);
      add("history proof", bundle.historyProof.length === 0 ? "(the height is the head)" : bundle.historyProof.map(short).join(" "));
    }
    if (bundle.l1) add("L1 post", `head ${bundle.l1.head.header.height} in block ${bundle.l1.blockNumber} (${bundle.l1.confirmations} confirmations${bundle.l1.finalized ? ", final" : ""}), tx ${bundle.l1.txHash}`);
    add("verify it yourself", `sequencer-node light verify-tx ${hash} --node ${location.origin} --group-key <pinned key> --key-epoch <its epoch>`);
    result.append(facts);
  } catch (error) {
    result.textContent = error.status === 404 ? "this node does not know that tx" : `lookup failed: ${error.message}`;
  }
}

$("#lookup").addEventListener("submit", lookup);
refresh();
setInterval(refresh, 1000);
