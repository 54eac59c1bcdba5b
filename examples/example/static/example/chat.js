// The chat page: one WebSocket to /ws/chat/ROOM/ on the same host (ws:, or wss: behind TLS).
// Messages arrive through the Channels layer, so with Redis they come from every worker.
//
// Whether WebSockets work is found out by trying, not guessed from how the page was
// served: in hybrid mode (bivio --django example) the page comes from the WSGI app and
// the WebSocket from the ASGI app. A WebSocket that cannot be opened is tried again
// after 1, 2 and 4 seconds, then the script gives up and says why (#no-websocket); it
// never retries forever. A chat that was working (the server's welcome arrived) and
// drops gets the same three tries again.
(function () {
  "use strict";
  const RETRY_DELAYS_MS = [1000, 2000, 4000];  // one retry per entry, then give up
  const room = JSON.parse(document.getElementById("room-name").textContent);
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const url = scheme + "//" + window.location.host + "/ws/chat/" + encodeURIComponent(room) + "/";
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const input = document.getElementById("message");
  const noWebSocket = document.getElementById("no-websocket");
  let socket = null;
  let retries = 0;          // retries since the last welcome
  let everOpened = false;   // some handshake succeeded: the server does have WebSockets

  function add(text, meta) {
    const li = document.createElement("li");
    li.textContent = text;
    if (meta) {
      const span = document.createElement("span");
      span.className = "meta";
      span.textContent = " " + meta;
      li.appendChild(span);
    }
    log.appendChild(li);
  }

  function retryOrGiveUp() {
    if (retries < RETRY_DELAYS_MS.length) {
      const delay = RETRY_DELAYS_MS[retries];
      retries += 1;
      status.textContent = (everOpened ? "disconnected" : "no connection") + "; retry " +
        retries + " of " + RETRY_DELAYS_MS.length + " in " + delay / 1000 + " s";
      setTimeout(connect, delay);
      return;
    }
    if (everOpened) {
      status.textContent = "disconnected; " + retries + " retries failed: reload the page " +
        "to try again";
    } else {
      // The upgrade never succeeded: the server has no WebSocket here (WSGI alone),
      // or a proxy in front does not pass the upgrade through.
      status.textContent = "no WebSocket: gave up after " + (retries + 1) + " tries";
      noWebSocket.hidden = false;
    }
  }

  function connect() {
    const ws = new WebSocket(url);
    let ended = false;
    socket = ws;
    ws.onopen = function () {
      everOpened = true;
      noWebSocket.hidden = true;
      status.textContent = "connected";
    };
    ws.onmessage = function (event) {
      const data = JSON.parse(event.data);
      if (data.type === "welcome") {
        retries = 0;
        status.textContent = "connected to worker " + data.worker + " (" + data.layer + ")";
      } else if (data.type === "message") {
        add(data.user + ": " + data.message, "(sent via worker " + data.from_worker + ")");
      }
    };
    // A failed handshake fires "error" and then "close" (some implementations only
    // "error"): whichever comes first ends this try, once.
    ws.onerror = ws.onclose = function () {
      if (ended) {
        return;
      }
      ended = true;
      if (socket === ws) {
        socket = null;
      }
      retryOrGiveUp();
    };
  }

  document.getElementById("send").addEventListener("submit", function (event) {
    event.preventDefault();
    if (socket && socket.readyState === WebSocket.OPEN && input.value.trim()) {
      socket.send(JSON.stringify({message: input.value}));
      input.value = "";
    }
  });
  connect();
})();
