// Drives the official SignalR JavaScript client (@microsoft/signalr) against a hub-server
// binary that validates JWT bearer tokens (started with --jwt-* flags), on the chat hub at
// /chathub. The Rust tests (hub-server/tests/security_official_client.rs) mint the tokens
// and assert on what this prints.
//
// Usage: node auth-client.js <base-url> <scenario> <parameters as JSON>
//
// Scenarios:
//   identity  {"tokens": {"<transport>": "<jwt>", ...}}: for each transport (WebSockets,
//             ServerSentEvents, LongPolling), one connection forced onto it with
//             accessTokenFactory returning the token joins a group; prints the transport
//             the client really used and the user the chat announced in UserJoinedGroup.
//   refused   {"tokens": {"<label>": "<jwt>", ...}}: start() with each token must reject;
//             prints each error's message.
//   expiry    {"transport": "...", "token": "<jwt>", "exp": <seconds>, "expectClose": bool,
//             "renewToken": "<jwt>" (optional)}: connects, then either waits for onclose
//             (prints its error, if any, and when it fired), or, with renewToken and
//             automatic reconnect, for the reconnect with the fresh token; or, when no close
//             is expected, waits until two seconds past `exp` and shows the connection
//             still works.
//
// Prints one JSON object on stdout; any failure goes to stderr with a non-zero exit code.

"use strict";

const signalR = require("@microsoft/signalr");

const [base, scenario, parametersJson] = process.argv.slice(2);
if (!base || !scenario || !parametersJson) {
    console.error("usage: node auth-client.js <base-url> <identity|refused|expiry> <parameters as JSON>");
    process.exit(2);
}
const parameters = JSON.parse(parametersJson);

/// How long any single expected event may take before the scenario fails.
const STEP_TIMEOUT_MS = 15000;

function connection({ token, transport, reconnect = false }) {
    const options = { accessTokenFactory: token };
    if (transport !== undefined) {
        options.transport = signalR.HttpTransportType[transport];
    }
    const builder = new signalR.HubConnectionBuilder()
        .withUrl(base + "/chathub", options)
        .configureLogging(signalR.LogLevel.None);
    if (reconnect) {
        builder.withAutomaticReconnect([0, 500, 1000]);
    }
    return builder.build();
}

/// A promise settled by the first call of the callback it hands to `subscribe`, failing
/// after `timeout` ms.
function once(what, subscribe, timeout = STEP_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeout);
        subscribe((...args) => {
            clearTimeout(timer);
            resolve(args);
        });
    });
}

/// Join `group` and return the user the chat announces the caller as.
async function announcedUser(conn, group) {
    const joined = once(`UserJoinedGroup(${group})`, (callback) => {
        conn.on("UserJoinedGroup", (user, name) => {
            if (name === group) {
                callback(user);
            }
        });
    });
    await conn.invoke("JoinGroup", group);
    const [user] = await joined;
    conn.off("UserJoinedGroup");
    return user;
}

async function identity() {
    const out = {};
    for (const [transport, token] of Object.entries(parameters.tokens)) {
        const conn = connection({ token: () => token, transport });
        await conn.start();
        const used = conn.connection.transport.constructor.name;
        const user = await announcedUser(conn, `room-${transport}`);
        await conn.stop();
        out[transport] = { transport: used, user };
    }
    return out;
}

async function refused() {
    const out = {};
    for (const [label, token] of Object.entries(parameters.tokens)) {
        const conn = connection({ token: () => token });
        try {
            await conn.start();
            await conn.stop();
            out[label] = { started: true };
        } catch (error) {
            out[label] = { started: false, error: error.message };
        }
    }
    return out;
}

async function expiry() {
    const { transport, token, exp, expectClose, renewToken } = parameters;
    // The fresh token once the first one has expired, as a real token source would.
    const current = () => (renewToken !== undefined && Date.now() >= exp * 1000 ? renewToken : token);
    const conn = connection({ token: current, transport, reconnect: renewToken !== undefined });
    const closed = once("onclose", (callback) => conn.onclose(callback), (exp * 1000 - Date.now()) + STEP_TIMEOUT_MS);
    closed.catch(() => {}); // Not awaited on every path.
    await conn.start();
    const out = { transport: conn.connection.transport.constructor.name, startedAtMs: Date.now() };
    if (renewToken !== undefined) {
        const [error] = await once("onreconnecting", (callback) => conn.onreconnecting(callback), (exp * 1000 - Date.now()) + STEP_TIMEOUT_MS);
        out.reconnectingAtMs = Date.now();
        out.reconnectingError = error === undefined ? null : error.message;
        await once("onreconnected", (callback) => conn.onreconnected(callback));
        out.userAfterReconnect = await announcedUser(conn, "after-reconnect");
        await conn.stop();
        return out;
    }
    if (expectClose) {
        const [error] = await closed;
        out.closedAtMs = Date.now();
        out.error = error === undefined ? null : error.message;
        return out;
    }
    // No close expected: past the expiry (by the client's clock, which is the server's
    // on this machine), the connection must still answer.
    let closedEarly = false;
    closed.then(() => { closedEarly = true; }, () => {});
    const wait = exp * 1000 + 2000 - Date.now();
    await new Promise((resolve) => setTimeout(resolve, Math.max(wait, 0)));
    out.closed = closedEarly;
    out.userAfterExpiry = closedEarly ? null : await announcedUser(conn, "after-expiry");
    await conn.stop();
    return out;
}

const scenarios = { identity, refused, expiry };

(async () => {
    const run = scenarios[scenario];
    if (run === undefined) {
        throw new Error(`unknown scenario ${scenario}`);
    }
    const out = await run();
    console.log(JSON.stringify(out));
    process.exit(0);
})().catch((error) => {
    console.error(error && error.stack ? error.stack : String(error));
    process.exit(1);
});
