// Drives the official SignalR JavaScript client (@microsoft/signalr, and
// @microsoft/signalr-protocol-msgpack for MessagePack) against a running hub-server.
//
// Usage: node official-client.js <base-url> <scenario> [json|messagepack]
//        [negotiate|skip|sse|longpolling]
//
// The last argument: negotiate and let the client pick its transport (WebSockets here),
// skip negotiate (WebSockets), or negotiate and force Server-Sent Events or long polling.
//
// Scenarios:
//   hub       the test hub at /hub: invoke with results and errors, send, receive, others,
//             groups, user and connection targeting, identity from accessTokenFactory
//   chat      the chat hub contract at /chathub
//   stateful  a client with stateful reconnect (offered by the server) invokes and stops cleanly
//   transports  (two base URLs: base-url is instance A, the fifth argument instance B) the
//             chat hub across two instances with one client per transport: WebSockets on
//             A, Server-Sent Events on B (long polling on A with MessagePack, which SSE
//             cannot carry), long polling on B; everyone talks to all and to a group
//   burst     400 x 16 KiB `send("SendMessage", ...)` in a loop on /chathub, which the client
//             coalesces into one multi-megabyte WebSocket message, then more sends: all
//             arrive complete and in order, and the connection stays up
//
// `protocol` in the output is read from the connection's (internal) `_protocol`, to prove
// which hub protocol the client really spoke.
//
// Prints one JSON object on stdout with everything the clients observed; the Rust test
// (tests/tests/hub_official_client.rs) asserts on it. Any failure goes to stderr with a
// non-zero exit code.

"use strict";

const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

const [base, scenario, protocol = "json", negotiation = "negotiate", otherBase] = process.argv.slice(2);
if (!base || !scenario) {
    console.error("usage: node official-client.js <base-url> <scenario> [json|messagepack] [negotiate|skip]");
    process.exit(2);
}

/// How long any single expected event may take before the scenario fails.
const STEP_TIMEOUT_MS = 10000;

function connection(path, { user, stateful = false, webSocket, transport, url = base } = {}) {
    const options = {};
    if (transport !== undefined) {
        options.transport = signalR.HttpTransportType[transport];
    }
    if (user !== undefined) {
        options.accessTokenFactory = () => user;
    }
    if (webSocket !== undefined) {
        options.WebSocket = webSocket;
    }
    if (negotiation === "skip") {
        options.skipNegotiation = true;
        options.transport = signalR.HttpTransportType.WebSockets;
    } else if (negotiation === "sse") {
        options.transport = signalR.HttpTransportType.ServerSentEvents;
    } else if (negotiation === "longpolling") {
        options.transport = signalR.HttpTransportType.LongPolling;
    }
    const builder = new signalR.HubConnectionBuilder()
        .withUrl(url + path, options)
        .configureLogging(signalR.LogLevel.Warning);
    if (protocol === "messagepack") {
        builder.withHubProtocol(new MessagePackHubProtocol());
    }
    if (stateful) {
        builder.withStatefulReconnect();
    }
    return builder.build();
}

/// The transport a connected connection really uses (read from the client's internals,
/// which forget it once stopped).
function transportOf(conn) {
    return conn.connection.transport.constructor.name;
}

/// Record every call of `methods` on `conn` as [method, ...args] in `log`.
function record(conn, methods, log) {
    for (const method of methods) {
        // Handlers must return undefined: a returned value would be a client result.
        conn.on(method, (...args) => {
            log.push([method, ...args]);
        });
    }
}

/// Resolve once `predicate(log)` holds; fail after `timeout` ms (STEP_TIMEOUT_MS).
async function until(what, log, predicate, timeout = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + timeout;
    while (!predicate(log)) {
        if (Date.now() > deadline) {
            throw new Error(`timed out waiting for ${what}; log so far: ${JSON.stringify(log)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
    }
}

function has(entry) {
    const wanted = JSON.stringify(entry);
    return (log) => log.some((item) => JSON.stringify(item) === wanted);
}

async function errorOf(promise) {
    try {
        const value = await promise;
        return { unexpectedValue: value === undefined ? "undefined" : value };
    } catch (error) {
        return error.message;
    }
}

async function hubScenario() {
    const tag = `${protocol}-${negotiation}`;
    const logs = { alice: [], bob: [], carol: [] };
    const alice = connection("/hub", { user: `alice-${tag}` });
    const bob = connection("/hub", { user: `bob-${tag}` });
    const carol = connection("/hub");
    const methods = ["Broadcast", "Direct", "GroupMessage"];
    record(alice, methods, logs.alice);
    record(bob, methods, logs.bob);
    record(carol, methods, logs.carol);
    await alice.start();
    await bob.start();
    await carol.start();

    const out = { protocol: alice._protocol.name };
    out.connectionIdFromNegotiate = alice.connectionId === null ? null : alice.connectionId.length;
    const aliceId = await alice.invoke("ConnectionId");
    out.connectionIdMatches = alice.connectionId === null ? null : alice.connectionId === aliceId;
    out.add = await alice.invoke("Add", 40, 2);
    out.echo = await alice.invoke("Echo", "héllo \"wörld\" ✓ \u0001");
    const nothing = await alice.invoke("Nothing");
    out.nothing = nothing === undefined ? "undefined" : nothing;
    out.whoAmI = await alice.invoke("WhoAmI");
    out.anonymousWhoAmI = await carol.invoke("WhoAmI");
    out.fail = await errorOf(alice.invoke("Fail"));
    out.unknownMethod = await errorOf(alice.invoke("NoSuchMethod", 1));
    out.wrongArgumentCount = await errorOf(alice.invoke("Add", 1));
    out.wrongArgumentType = await errorOf(alice.invoke("Add", 1, "two"));

    // A sync point: once every connection has "barrier-n", everything sent to it before
    // has arrived (each connection receives in the order the server sent).
    let barriers = 0;
    const barrier = async () => {
        const text = `barrier-${barriers++}`;
        await alice.invoke("Broadcast", text);
        for (const name of ["alice", "bob", "carol"]) {
            await until(`${name} to get ${text}`, logs[name], has(["Broadcast", text]));
        }
    };

    await alice.invoke("Broadcast", "hello everyone");
    await alice.send("Broadcast", "fire and forget");
    await alice.invoke("SendToOthers", "not for alice");
    await barrier();

    await bob.invoke("JoinGroup", "room");
    await alice.invoke("SendToGroup", "room", "for the room");
    await barrier();
    await bob.invoke("LeaveGroup", "room");
    await alice.invoke("SendToGroup", "room", "after bob left");
    await barrier();

    await carol.invoke("SendToUser", `bob-${tag}`, "for bob the user");
    const bobId = await bob.invoke("ConnectionId");
    await carol.invoke("SendToConnection", bobId, "for bob's connection");
    await barrier();

    out.logs = logs;
    await Promise.all([alice.stop(), bob.stop(), carol.stop()]);
    return out;
}

async function chatScenario() {
    const logs = { ann: [], anonymous: [] };
    const ann = connection("/chathub", { user: "ann" });
    const anonymous = connection("/chathub");
    const methods = [
        "ReceiveMessage",
        "UserJoinedGroup",
        "UserLeftGroup",
        "ReceiveGroupMessage",
        "UserConnected",
        "UserDisconnected",
    ];
    record(ann, methods, logs.ann);
    record(anonymous, methods, logs.anonymous);
    await ann.start();
    const transport = transportOf(ann);
    const annId = ann.connectionId;
    await until("ann's own UserConnected", logs.ann, has(["UserConnected", annId]));
    await anonymous.start();
    const anonymousId = anonymous.connectionId;
    await until("anonymous's UserConnected", logs.ann, has(["UserConnected", anonymousId]));

    await ann.invoke("SendMessage", "ann", "hi all");
    // null for a string argument, as ASP.NET Core's sample (C# `string user`) accepts it.
    await anonymous.invoke("SendMessage", null, "no name");
    await ann.invoke("JoinGroup", "room");
    await anonymous.invoke("JoinGroup", "room");
    await anonymous.invoke("SendMessageToGroup", "room", "anon", "group hi");
    await anonymous.invoke("SendMessageToGroup", "room", null, null);
    await anonymous.invoke("LeaveGroup", "room");
    await ann.invoke("SendMessageToGroup", "room", "ann", "only ann is left");
    const emptyGroup = await errorOf(ann.invoke("JoinGroup", ""));
    await ann.invoke("SendMessage", "ann", "end");
    await until("the end", logs.anonymous, has(["ReceiveMessage", "ann", "end"]));
    await until("the end", logs.ann, has(["ReceiveMessage", "ann", "end"]));
    await anonymous.stop();
    await until("UserDisconnected", logs.ann, has(["UserDisconnected", anonymousId]));
    await ann.stop();

    // Connection ids are random: name them.
    const names = { [annId]: "<ann>", [anonymousId]: "<anonymous>" };
    const named = (log) => log.map((entry) => entry.map((value) => names[value] ?? value));
    return {
        protocol: ann._protocol.name,
        transport,
        emptyGroup,
        logs: { ann: named(logs.ann), anonymous: named(logs.anonymous) },
    };
}

async function statefulScenario() {
    const conn = connection("/hub", { stateful: true });
    await conn.start();
    const add = await conn.invoke("Add", 2, 3);
    await conn.stop();
    return { protocol: conn._protocol.name, add };
}

async function burstScenario() {
    // The client's own WebSocket (the `ws` package under Node), recording the size of each
    // WebSocket message it sends, to show the burst really was coalesced.
    const sentSizes = [];
    class RecordingWebSocket extends require("ws") {
        send(data, ...rest) {
            sentSizes.push(typeof data === "string" ? Buffer.byteLength(data) : data.byteLength);
            return super.send(data, ...rest);
        }
    }
    const sender = connection("/chathub", { user: "sender", webSocket: RecordingWebSocket });
    const receiver = connection("/chathub", { user: "receiver" });
    const got = { sender: [], receiver: [] };
    // Handlers must return undefined: a returned value would be a client result.
    sender.on("ReceiveMessage", (user, text) => {
        got.sender.push(text);
    });
    receiver.on("ReceiveMessage", (user, text) => {
        got.receiver.push(text);
    });
    await receiver.start();
    await sender.start();

    const count = 400;
    const size = 16 * 1024;
    const expected = [];
    for (let i = 0; i < count; i++) {
        const head = `burst-${i}-`;
        expected.push(head + "x".repeat(size - head.length));
    }
    // No await inside the loop: the sends queue up behind the first one in flight, and
    // the client sends them together.
    const sends = expected.map((text) => sender.send("SendMessage", "sender", text));
    await Promise.all(sends);
    const burstMessages = sentSizes.length;
    for (let i = 0; i < 10; i++) {
        const text = `after-${i}`;
        expected.push(text);
        await sender.send("SendMessage", "sender", text);
    }
    expected.push("end");
    await sender.invoke("SendMessage", "sender", "end");
    for (const name of ["sender", "receiver"]) {
        // Megabytes through a debug build on a busy two-core machine: more than one step's
        // time, and still bounded.
        await until(`${name} to get the end`, got[name], (log) => log.includes("end"), 6 * STEP_TIMEOUT_MS);
    }
    const stateAfter = sender.state;

    const check = (log) => {
        const firstMismatch = expected.findIndex((text, i) => log[i] !== text);
        return { count: log.length, firstMismatch };
    };
    const out = {
        protocol: sender._protocol.name,
        expected: expected.length,
        sender: check(got.sender),
        receiver: check(got.receiver),
        stateAfter,
        largestWebSocketMessage: Math.max(...sentSizes),
        burstWebSocketMessages: burstMessages,
    };
    await Promise.all([sender.stop(), receiver.stop()]);
    return out;
}

async function transportsScenario() {
    const b = otherBase;
    if (!b) {
        throw new Error("the transports scenario needs a second base URL");
    }
    const slots = [
        ["ws", "WebSockets", base],
        protocol === "messagepack" ? ["sse", "LongPolling", base] : ["sse", "ServerSentEvents", b],
        ["lp", "LongPolling", b],
    ];
    const clients = slots.map(([name, transport, url]) => ({
        name,
        conn: connection("/chathub", { user: name, transport, url }),
        log: [],
    }));
    for (const client of clients) {
        record(client.conn, ["ReceiveMessage", "ReceiveGroupMessage"], client.log);
        await client.conn.start();
        client.transport = transportOf(client.conn);
    }
    for (const client of clients) {
        await client.conn.invoke("JoinGroup", "room");
    }
    for (const client of clients) {
        await client.conn.invoke("SendMessage", client.name, `hello from ${client.name}`);
    }
    for (const client of clients) {
        await client.conn.invoke("SendMessageToGroup", "room", client.name, `room from ${client.name}`);
    }
    for (const client of clients) {
        await until(`${client.name} to get everything`, client.log, (log) => log.length >= 6);
    }
    const out = {};
    for (const client of clients) {
        out[client.name] = { transport: client.transport, log: client.log };
    }
    await Promise.all(clients.map((client) => client.conn.stop()));
    return out;
}

const scenarios = {
    transports: transportsScenario, hub: hubScenario, chat: chatScenario, stateful: statefulScenario, burst: burstScenario };

(async () => {
    const run = scenarios[scenario];
    if (!run) {
        throw new Error(`unknown scenario ${scenario}`);
    }
    const result = await run();
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
})().catch((error) => {
    console.error(`scenario ${scenario} (${protocol}, ${negotiation}) failed:`, error && error.stack ? error.stack : error);
    process.exit(1);
});
