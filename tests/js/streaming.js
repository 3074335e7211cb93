// Streaming both ways and client results with the official SignalR JavaScript client,
// against the example hub (/streaming) on two hub-server instances.
//
// Usage: node streaming.js <base-url-A> <base-url-B> [json|messagepack]
//
// Prints one JSON object with what the clients observed; tests/tests/hub_streaming.rs
// asserts on it. Any failure goes to stderr with a non-zero exit code.

"use strict";

const signalR = require("@microsoft/signalr");
const common = require("./scenario-common");
const { sleep } = common;

const [baseA, baseB, protocol = "json"] = process.argv.slice(2);
if (!baseA || !baseB) {
    console.error("usage: node streaming.js <base-url-A> <base-url-B> [json|messagepack]");
    process.exit(2);
}

/// How long any single expected event may take before the scenario fails.
const STEP_TIMEOUT_MS = 60000;

function connect(base) {
    return common.buildConnection(base + "/streaming", protocol);
}

function within(promise, what) {
    return common.within(promise, what, STEP_TIMEOUT_MS);
}

/// Every item of a stream, and how it ended.
function collect(conn, method, ...args) {
    return new Promise((resolve) => {
        const items = [];
        conn.stream(method, ...args).subscribe({
            next: (item) => items.push(Number(item)),
            complete: () => resolve({ items, error: null }),
            error: (error) => resolve({ items, error: String(error.message || error) }),
        });
    });
}

async function errorOf(promise) {
    const started = Date.now();
    try {
        const value = await promise;
        return { value, error: null, ms: Date.now() - started };
    } catch (error) {
        return { value: null, error: String(error.message || error), ms: Date.now() - started };
    }
}

async function main() {
    const out = { protocol };
    const a = connect(baseA);
    const b = connect(baseB);
    await within(a.start(), "start on A");
    await within(b.start(), "start on B");

    // Server to client: 10,000 items, complete and in order.
    const counted = await within(collect(a, "Counter", 10000, 0), "Counter(10000)");
    out.streamCount = counted.items.length;
    out.streamInOrder = counted.items.every((item, index) => item === index);
    out.streamError = counted.error;

    // An error mid-stream ends it with a completion error.
    out.failed = await within(collect(a, "Fail", 3), "Fail(3)");

    // Cancel mid-stream: the producer on the server stops.
    const before = await a.invoke("Stats");
    await within(new Promise((resolve) => {
        let seen = 0;
        const subscription = a.stream("Counter", 1000000, 1).subscribe({
            next: () => {
                seen += 1;
                if (seen === 50) {
                    subscription.dispose();
                    resolve();
                }
            },
            complete: () => resolve(),
            error: () => resolve(),
        });
    }), "50 items of Counter(1000000)");
    let stats = await a.invoke("Stats");
    for (let i = 0; stats.running !== 0 && i < 600; i++) {
        await sleep(100);
        stats = await a.invoke("Stats");
    }
    await sleep(1000);
    const later = await a.invoke("Stats");
    out.cancel = {
        runningAfterCancel: Number(stats.running),
        cancelledStreams: Number(stats.cancelled) - Number(before.cancelled),
        producedByCancelled: Number(stats.produced) - Number(before.produced),
        producedSinceStop: Number(later.produced) - Number(stats.produced),
    };

    // Client to server: an upload of 10,000 numbers, summed.
    const subject = new signalR.Subject();
    const summing = a.invoke("Sum", subject);
    for (let i = 1; i <= 10000; i++) {
        subject.next(i);
    }
    subject.complete();
    out.sum = Number(await within(summing, "Sum"));

    // Client results: asked on A of a client on B, a value and a promise.
    b.on("GetAnswer", (x) => x * 2);
    b.on("GetLater", (x) => new Promise((resolve) => setTimeout(() => resolve(x + 1), 100)));
    b.on("Refuse", () => { throw new Error("no answer for you"); });
    out.answer = await within(a.invoke("AskClient", b.connectionId, "GetAnswer", 21), "GetAnswer");
    out.later = await within(a.invoke("AskClient", b.connectionId, "GetLater", 41), "GetLater");
    out.refused = await within(errorOf(a.invoke("AskClient", b.connectionId, "Refuse", 0)), "Refuse");

    // The client on B disconnects while the call waits for it.
    const c = connect(baseB);
    await within(c.start(), "start C on B");
    const departedOnB = c.connectionId; // the client forgets it when stopped
    let reached;
    const reachedC = new Promise((resolve) => { reached = resolve; });
    c.on("Hang", () => { reached(); return new Promise(() => {}); });
    const hanging = errorOf(a.invoke("AskClient", c.connectionId, "Hang", 0));
    await within(reachedC, "Hang reaches C");
    await c.stop();
    out.disconnected = await within(hanging, "the call on a departed client");

    // Connections no server has. C's id names B, which answers at once that it has no
    // such connection; D's names A itself; "no-such-connection" names no server, so only
    // the owner timeout can tell.
    out.departedOnB = await within(errorOf(a.invoke("AskClient", departedOnB, "GetAnswer", 1)), "departed C");
    const d = connect(baseA);
    await within(d.start(), "start D on A");
    const departedId = d.connectionId;
    await d.stop();
    // stop() resolves when the client closed; give A a moment to see the close, or the
    // call races the disconnect and fails as "disconnected" instead.
    await sleep(500);
    out.departedOnA = await within(errorOf(a.invoke("AskClient", departedId, "GetAnswer", 1)), "departed D");
    out.unknown = await within(errorOf(a.invoke("AskClient", "no-such-connection", "GetAnswer", 1)), "unknown connection");

    await a.stop();
    await b.stop();
    console.log(JSON.stringify(out));
}

main().catch((error) => {
    console.error(error && error.stack || String(error));
    process.exit(1);
});
