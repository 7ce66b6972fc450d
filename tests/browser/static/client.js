// A minimal frontend: what a page on another origin does with the gateway, with the browser's own
// fetch, EventSource and WebSocket. The tests call window.client.<name>(...) and read back plain
// JSON; every call is also written to the page, so a screenshot shows what happened.
"use strict";

const GW = new URLSearchParams(location.search).get("gw");
document.getElementById("origin").textContent = location.origin;
document.getElementById("gateway").textContent = GW;

function log(line, failed = false) {
  const item = document.createElement("li");
  item.textContent = line;
  if (failed) item.className = "error";
  document.getElementById("log").append(item);
}

function failure(err) {
  return `${err.name}: ${err.message}`;
}

async function answer(resp) {
  const type = resp.headers.get("content-type") || "";
  const text = await resp.text();
  let body = text;
  if (type.includes("json") && text) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      body = text;
    }
  }
  return { status: resp.status, type, redirected: resp.redirected, url: resp.url, body };
}

// fetch(GW + path) with credentials; options: json (a body), token (Bearer), file ({name, text,
// size, type}: a FormData upload; size pads the text with "x" up to that many bytes).
async function call(method, path, options = {}) {
  const init = { method, credentials: options.credentials || "include", headers: {} };
  if (options.token) init.headers["Authorization"] = "Bearer " + options.token;
  if (options.json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  if (options.file) {
    const f = options.file;
    const text = (f.text || "") + "x".repeat(Math.max(0, (f.size || 0) - (f.text || "").length));
    const form = new FormData();
    form.append("file", new Blob([text], { type: f.type || "text/plain" }), f.name);
    init.body = form;
  }
  try {
    const out = await answer(await fetch(GW + path, init));
    log(`${method} ${path} -> ${out.status}${out.redirected ? " (redirected to " + out.url + ")" : ""}`);
    return out;
  } catch (err) {
    log(`${method} ${path} -> ${failure(err)}`, true);
    return { error: failure(err) };
  }
}

// Two tabs at the same moment: arm() waits for a "go" on a BroadcastChannel, then calls; fire()
// (from any other page of the origin) sends the "go"; armed() is the armed call's answer.
let armedCall = null;
function arm(method, path, options = {}) {
  const channel = new BroadcastChannel("go");
  armedCall = new Promise((resolve) => {
    channel.onmessage = () => {
      channel.close();
      resolve(call(method, path, options));
    };
  });
  log(`armed: ${method} ${path}`);
  return true;
}
function fire() {
  const channel = new BroadcastChannel("go");
  channel.postMessage("go");
  channel.close();
  log("go");
  return true;
}
function armed() {
  return armedCall;
}

// new EventSource(GW + path), listening to the named events until one of `terminal` arrives;
// an error before then (refused, cut off) ends it too.
function events(path, names, terminal) {
  return new Promise((resolve) => {
    const seen = [];
    const source = new EventSource(GW + path);
    const finish = (error) => {
      source.close();
      log(`EventSource ${path.split("?")[0]} -> ${seen.length} events${error ? ", " + error : ""}`, !!error);
      resolve({ events: seen, error });
    };
    for (const name of names) {
      source.addEventListener(name, (e) => {
        seen.push({ event: name, id: e.lastEventId, data: JSON.parse(e.data) });
        if (terminal.includes(name)) finish(null);
      });
    }
    source.onmessage = (e) => seen.push({ event: "message", id: e.lastEventId, data: e.data });
    source.onerror = () => finish(`error (readyState ${source.readyState})`);
  });
}

// new WebSocket(ws://<gateway host>/path): sends `first`, collects the messages (JSON objects whose
// "event" names them); once a `cancelOn` event arrives, sends {"type": "cancel"}; ends at an event
// in `terminal` or when the socket closes.
function socket(path, first, cancelOn, terminal) {
  return new Promise((resolve) => {
    const messages = [];
    let cancelled = false;
    let done = false;
    const url = "ws://" + new URL(GW).host + path;
    const ws = new WebSocket(url);
    const finish = (how) => {
      if (done) return;
      done = true;
      log(`WebSocket ${path} -> ${messages.length} messages, ${how}`);
      resolve({ messages, how, sentCancel: cancelled });
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
    };
    ws.onopen = () => ws.send(JSON.stringify(first));
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        msg = { raw: e.data };
      }
      messages.push(msg);
      const type = msg.event ?? msg.type;
      if (!cancelled && type === cancelOn) {
        cancelled = true;
        ws.send(JSON.stringify({ type: "cancel" }));
        log("WebSocket: sent cancel");
      }
      if (terminal.includes(type)) finish(`ended by ${type}`);
    };
    ws.onclose = (e) => finish(`closed ${e.code}${e.reason ? " " + e.reason : ""}`);
  });
}

// A streamed answer read chunk by chunk through the ReadableStream of a fetch.
async function stream(path, options = {}) {
  const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
  if (options.token) headers["Authorization"] = "Bearer " + options.token;
  try {
    const resp = await fetch(GW + path, {
      method: "POST",
      credentials: "include",
      headers,
      body: JSON.stringify(options.json),
    });
    const type = resp.headers.get("content-type") || "";
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    let reads = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      reads += 1;
      text += decoder.decode(value, { stream: true });
    }
    text += decoder.decode();
    log(`POST ${path} (stream) -> ${resp.status}, ${reads} reads`);
    return { status: resp.status, type, reads, text };
  } catch (err) {
    log(`POST ${path} (stream) -> ${failure(err)}`, true);
    return { error: failure(err) };
  }
}

window.client = { call, arm, fire, armed, events, socket, stream, ready: true };
log("ready");
