// What the scenario scripts streaming.js, stateful-reconnect.js and streams-reconnect.js
// share: a connection of the official client built as they need it, a bounded wait, and
// writing to stdout (where the test reads their lines).

"use strict";

const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

/// A connection to `url` speaking `protocol` ("json" or "messagepack"), logging warnings
/// and worse, with the `withUrl` `options` given. With `stateful`, stateful reconnect and
/// automatic reconnect too, as apps configure it: had stateful reconnect failed, the
/// client would fall back to it and the app would see `onreconnecting`.
function buildConnection(url, protocol, { stateful = false, options = {} } = {}) {
    const builder = new signalR.HubConnectionBuilder()
        .withUrl(url, options)
        .configureLogging(signalR.LogLevel.Warning);
    if (protocol === "messagepack") {
        builder.withHubProtocol(new MessagePackHubProtocol());
    }
    if (stateful) {
        builder.withStatefulReconnect().withAutomaticReconnect();
    }
    return builder.build();
}

/// `promise`, or a rejection naming `what` once `timeoutMs` have passed.
function within(promise, what, timeoutMs) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), timeoutMs);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/// Write `text` to stdout; resolves once it is flushed.
function write(text) {
    return new Promise((resolve) => process.stdout.write(text, resolve));
}

module.exports = { buildConnection, within, sleep, write };
