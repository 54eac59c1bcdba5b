// Runs the example's chat page under Node, without a browser: the page and its script
// (examples/example/static/example/chat.js, at the hashed URL the page names) are
// fetched from the server under test, the script runs against a small stand-in for
// the DOM, and what it did is printed as one JSON line when it is done.
//
//   node [--experimental-websocket] chat_page.js PAGE_URL [--say=TEXT] [--fake=OUTCOMES]
//
// WebSocket: Node's own (a real connection to the server, sending the page's origin
// as a browser does), or with --fake=fail,welcome-drop,... one scripted socket per try:
//   fail          the handshake fails: "error", then "close" (as browsers do)
//   error-only    the handshake fails with "error" alone (as Node 20's WebSocket does)
//   welcome-drop  opens, the server's welcome arrives, then the connection closes
// setTimeout runs its callback at once and records the delay asked for, so retries
// and their backoff are seen without waiting for them.
//
// "Done" is an event, never a time: with --say, the message coming back into the
// chat's log; otherwise Node having nothing left to do (the script stopped trying).
// More tries than MAX_TRIES is a script that does not stop: exit code 1.
"use strict";
const vm = require("vm");

const MAX_TRIES = 12;
const args = process.argv.slice(2);
const pageUrl = new URL(args.find((a) => !a.startsWith("--")));
const option = (name) => {
  const found = args.find((a) => a.startsWith("--" + name + "="));
  return found === undefined ? undefined : found.slice(name.length + 3);
};
const say = option("say");
const fake = option("fake") === undefined ? undefined : option("fake").split(",");

const tries = [];
const delays = [];
const statuses = [];
const elements = {};
let finished = false;

function report(code, extra) {
  if (finished) {
    return;
  }
  finished = true;
  const warning = elements["no-websocket"];
  process.stdout.write(JSON.stringify(Object.assign({
    tries: tries,
    delays: delays,
    statuses: statuses,
    status: elements.status ? elements.status.textContent : null,
    warning_hidden: warning ? warning.hidden : null,
    warning_text: warning ? warning.textContent : null,
    log: elements.log ? elements.log.children.map((li) => li.text()) : [],
  }, extra || {})) + "\n");
  process.exit(code);
}

class Element {
  constructor(tag, id, text, hidden) {
    this.tagName = tag.toUpperCase();
    this.id = id;
    this._text = text;
    this.hidden = hidden;
    this.className = "";
    this.value = "";
    this.children = [];
    this.listeners = {};
  }
  get textContent() { return this._text; }
  set textContent(value) {
    this._text = String(value);
    if (this.id === "status") {
      statuses.push(this._text);
      if (say !== undefined && this._text.startsWith("connected to worker")) {
        setImmediate(() => {
          elements.message.value = say;
          for (const fn of elements.send.listeners.submit || []) {
            fn({preventDefault() {}});
          }
        });
      }
    }
  }
  text() { return this._text + this.children.map((c) => c.text()).join(""); }
  appendChild(child) {
    this.children.push(child);
    if (this.id === "log" && say !== undefined && child.text().includes(say)) {
      setImmediate(() => report(0));
    }
    return child;
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
}

function parsePage(html) {
  // Every element with an id, its text up to its closing tag, and its hidden attribute.
  const tag = /<(\w+)([^>]*?)\sid="([^"]+)"([^>]*)>/g;
  let m;
  while ((m = tag.exec(html)) !== null) {
    const attrs = m[2] + " " + m[4];
    const rest = html.slice(tag.lastIndex);
    const close = rest.indexOf("</" + m[1] + ">");
    const inner = close < 0 ? "" : rest.slice(0, close).replace(/<[^>]*>/g, "");
    elements[m[3]] = new Element(m[1], m[3], inner, /(^|\s)hidden(\s|=|$)/.test(attrs));
  }
  const src = /<script src="([^"]+)"/.exec(html);
  if (!src) {
    report(2, {error: "no script in the page"});
  }
  return new URL(src[1], pageUrl);
}

function fakeWebSocketClass() {
  class FakeWebSocket {
    constructor(url) {
      tries.push(url);
      if (tries.length > MAX_TRIES) {
        report(1, {error: "more than " + MAX_TRIES + " tries: the script does not stop"});
      }
      const outcome = fake[tries.length - 1];
      if (outcome === undefined) {
        report(1, {error: "try " + tries.length + " was not expected"});
      }
      this.readyState = 0;
      setImmediate(() => this._play(outcome));
    }
    _play(outcome) {
      if (outcome === "welcome-drop") {
        this.readyState = 1;
        this.onopen && this.onopen({});
        this.onmessage && this.onmessage({data: JSON.stringify(
          {type: "welcome", worker: 1, layer: "FakeLayer"})});
        this.readyState = 3;
        this.onclose && this.onclose({code: 1006});
      } else if (outcome === "fail" || outcome === "error-only") {
        this.readyState = 3;
        this.onerror && this.onerror({});
        if (outcome === "fail") {
          this.onclose && this.onclose({code: 1006});
        }
      } else {
        report(2, {error: "unknown outcome " + outcome});
      }
    }
    send() {}
  }
  FakeWebSocket.CONNECTING = 0;
  FakeWebSocket.OPEN = 1;
  FakeWebSocket.CLOSING = 2;
  FakeWebSocket.CLOSED = 3;
  return FakeWebSocket;
}

function realWebSocketClass() {
  if (typeof WebSocket !== "function") {
    report(2, {error: "this Node has no WebSocket"});
  }
  // A browser sends the page's origin; Channels' AllowedHostsOriginValidator checks it.
  return class PageWebSocket extends WebSocket {
    constructor(url) {
      tries.push(url);
      if (tries.length > MAX_TRIES) {
        report(1, {error: "more than " + MAX_TRIES + " tries: the script does not stop"});
      }
      super(url, {headers: {origin: pageUrl.origin}});
    }
  };
}

async function main() {
  const page = await fetch(pageUrl);
  if (page.status !== 200) {
    report(2, {error: "page: HTTP " + page.status});
  }
  const scriptUrl = parsePage(await page.text());
  const script = await fetch(scriptUrl);
  if (script.status !== 200) {
    report(2, {error: "script: HTTP " + script.status});
  }
  const code = await script.text();
  const sandbox = {
    window: {location: {protocol: pageUrl.protocol, host: pageUrl.host, href: pageUrl.href}},
    document: {
      getElementById: (id) => elements[id] || null,
      createElement: (tag) => new Element(tag, "", "", false),
    },
    WebSocket: fake ? fakeWebSocketClass() : realWebSocketClass(),
    setTimeout: (fn, ms) => { delays.push(ms); setImmediate(fn); return delays.length; },
    console: console,
  };
  process.on("beforeExit", () => report(0));
  vm.runInNewContext(code, sandbox, {filename: scriptUrl.pathname});
}

main().catch((error) => report(2, {error: String(error && error.stack || error)}));
