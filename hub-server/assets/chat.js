// The chat page: the official SignalR client (signalR, from signalr.min.js) on the hub at
// /chathub. Everything a user or the server supplies is put into the page as text
// (textContent, Text nodes), never as HTML.
"use strict";

(() => {
  const HUB_URL = "/chathub";

  const ui = {
    status: document.getElementById("status"),
    loginForm: document.getElementById("login-form"),
    user: document.getElementById("user"),
    connect: document.getElementById("connect"),
    messages: document.getElementById("messages"),
    messageForm: document.getElementById("message-form"),
    target: document.getElementById("target"),
    message: document.getElementById("message"),
    send: document.getElementById("send"),
    groupForm: document.getElementById("group-form"),
    group: document.getElementById("group"),
    join: document.getElementById("join"),
    groups: document.getElementById("groups"),
    noGroups: document.getElementById("no-groups"),
  };

  /** The hub connection, once the user has connected. */
  let connection = null;
  /** The name sent with every message, fixed while connected. */
  let userName = "";
  /** The groups this page is in: the server forgets them when it restarts, so they are
   *  joined again after every reconnect. */
  const joined = new Set();

  /** The transport `?transport=` asks for, or undefined to let the client choose. */
  const transport = transportFromQuery();

  function transportFromQuery() {
    const wanted = new URLSearchParams(window.location.search).get("transport");
    if (!wanted) {
      return undefined;
    }
    const types = {
      websockets: signalR.HttpTransportType.WebSockets,
      serversentevents: signalR.HttpTransportType.ServerSentEvents,
      longpolling: signalR.HttpTransportType.LongPolling,
    };
    const type = types[wanted.toLowerCase()];
    if (type === undefined) {
      system(
        `Unknown transport "${wanted}" ignored: use websockets, serversentevents or longpolling.`,
      );
    }
    return type;
  }

  /** Reconnect at once, then after 1, 2 and 5 seconds, then every 5 seconds for five
   *  minutes; after that the page says it is disconnected and offers to connect. */
  const retryPolicy = {
    nextRetryDelayInMilliseconds(context) {
      if (context.elapsedMilliseconds > 5 * 60 * 1000) {
        return null;
      }
      return [0, 1000, 2000][context.previousRetryCount] ?? 5000;
    },
  };

  const STATE_TEXT = {
    disconnected: "Disconnected",
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
  };

  function setState(state) {
    ui.status.dataset.state = state;
    ui.status.textContent = STATE_TEXT[state];
    const connected = state === "connected";
    for (const control of [ui.target, ui.message, ui.send, ui.group, ui.join]) {
      control.disabled = !connected;
    }
    for (const button of ui.groups.querySelectorAll("button")) {
      button.disabled = !connected;
    }
    ui.user.readOnly = state !== "disconnected";
    ui.connect.disabled = state === "connecting";
    ui.connect.textContent = state === "disconnected" ? "Connect" : "Disconnect";
  }

  /** Adds one line to the log: `[tag] user: text`, or `[tag] text` without a user. */
  function addLine(kind, tag, user, text) {
    const line = document.createElement("li");
    line.className = kind;
    const label = document.createElement("span");
    label.className = "tag";
    label.textContent = `[${tag}]`;
    line.append(label, " ");
    if (user !== null) {
      const who = document.createElement("span");
      who.className = "user";
      who.textContent = user;
      line.append(who, ": ");
    }
    line.append(document.createTextNode(text ?? ""));
    ui.messages.append(line);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function system(text) {
    addLine("system", "SYSTEM", null, text);
  }

  function who(user) {
    return user ?? "someone";
  }

  function renderGroups() {
    const selected = ui.target.value;
    ui.groups.replaceChildren();
    ui.target.replaceChildren(new Option("Everyone", ""));
    for (const group of [...joined].sort()) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.textContent = group;
      const leave = document.createElement("button");
      leave.type = "button";
      leave.textContent = "Leave";
      leave.setAttribute("aria-label", `Leave group ${group}`);
      leave.disabled = ui.status.dataset.state !== "connected";
      leave.addEventListener("click", () => leaveGroup(group));
      item.append(name, " ", leave);
      ui.groups.append(item);
      ui.target.append(new Option(`Group ${group}`, group));
    }
    ui.target.value = joined.has(selected) ? selected : "";
    ui.noGroups.hidden = joined.size > 0;
  }

  function buildConnection() {
    const options = { accessTokenFactory: () => userName };
    if (transport !== undefined) {
      options.transport = transport;
    }
    const hub = new signalR.HubConnectionBuilder()
      .withUrl(HUB_URL, options)
      .withAutomaticReconnect(retryPolicy)
      .configureLogging(signalR.LogLevel.Warning)
      .build();
    hub.on("ReceiveMessage", (user, message) => addLine("all", "ALL", user, message));
    hub.on("ReceiveGroupMessage", (group, user, message) =>
      addLine("group", group, user, message),
    );
    hub.on("UserConnected", (id) => system(`${id} connected`));
    hub.on("UserDisconnected", (id) => system(`${id} disconnected`));
    hub.on("UserJoinedGroup", (user, group) => system(`${who(user)} joined group ${group}`));
    hub.on("UserLeftGroup", (user, group) => system(`${who(user)} left group ${group}`));
    hub.onreconnecting(() => {
      setState("reconnecting");
      system("Connection lost. Reconnecting…");
    });
    hub.onreconnected(async (id) => {
      setState("connected");
      system(`Reconnected. Connection id: ${id}`);
      for (const group of joined) {
        try {
          await hub.invoke("JoinGroup", group);
        } catch (error) {
          joined.delete(group);
          renderGroups();
          system(`Could not rejoin group ${group}: ${error.message}`);
        }
      }
    });
    hub.onclose((error) => {
      setState("disconnected");
      system(error ? `Disconnected: ${error.message}` : "Disconnected.");
    });
    return hub;
  }

  async function connect() {
    userName = ui.user.value.trim();
    if (!userName) {
      ui.user.setCustomValidity("Type a name: it is shown with every message you send.");
      ui.user.reportValidity();
      return;
    }
    connection = buildConnection();
    setState("connecting");
    try {
      await connection.start();
      setState("connected");
      system(`Connected as ${userName}. Connection id: ${connection.connectionId}`);
      ui.message.focus();
    } catch (error) {
      setState("disconnected");
      system(`Cannot connect: ${error.message}`);
    }
  }

  async function sendMessage() {
    const text = ui.message.value;
    if (!text.trim()) {
      return;
    }
    const group = ui.target.value;
    try {
      if (group) {
        await connection.invoke("SendMessageToGroup", group, userName, text);
      } else {
        await connection.invoke("SendMessage", userName, text);
      }
      // Cleared only once sent, so a refused message can be sent again.
      ui.message.value = "";
    } catch (error) {
      system(error.message);
    }
  }

  async function joinGroup() {
    const group = ui.group.value.trim();
    if (!group) {
      return;
    }
    if (joined.has(group)) {
      system(`You are already in group ${group}`);
      return;
    }
    try {
      await connection.invoke("JoinGroup", group);
      joined.add(group);
      renderGroups();
      ui.group.value = "";
    } catch (error) {
      system(error.message);
    }
  }

  async function leaveGroup(group) {
    try {
      await connection.invoke("LeaveGroup", group);
      joined.delete(group);
      renderGroups();
      // The server tells only the members who stay.
      system(`You left group ${group}`);
      ui.group.focus();
    } catch (error) {
      system(error.message);
    }
  }

  ui.user.addEventListener("input", () => ui.user.setCustomValidity(""));
  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (ui.status.dataset.state === "disconnected") {
      connect();
    } else if (connection) {
      connection.stop();
    }
  });
  ui.messageForm.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  ui.groupForm.addEventListener("submit", (event) => {
    event.preventDefault();
    joinGroup();
  });

  setState("disconnected");
  renderGroups();
  ui.user.focus();
})();
