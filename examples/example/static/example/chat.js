// The chat page: one WebSocket to /ws/chat/ROOM/ on the same host (ws:, or wss: behind TLS).
// Messages arrive through the Channels layer, so with Redis they come from every worker.
(function () {
  "use strict";
  const room = JSON.parse(document.getElementById("room-name").textContent);
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const url = scheme + "//" + window.location.host + "/ws/chat/" + encodeURIComponent(room) + "/";
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const input = document.getElementById("message");
  let socket = null;

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

  function connect() {
    socket = new WebSocket(url);
    socket.onmessage = function (event) {
      const data = JSON.parse(event.data);
      if (data.type === "welcome") {
        status.textContent = "connected to worker " + data.worker + " (" + data.layer + ")";
      } else if (data.type === "message") {
        add(data.user + ": " + data.message, "(sent via worker " + data.from_worker + ")");
      }
    };
    socket.onclose = function () {
      status.textContent = "disconnected; retrying in 2 s";
      setTimeout(connect, 2000);
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
