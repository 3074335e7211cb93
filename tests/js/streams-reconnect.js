// Streams, uploads and client results across stateful reconnects, with the official
// SignalR JavaScript client; run by tests/tests/hub_streams_reconnect.rs.
//
//   node streams-reconnect.js <resumable-base> <other-base> <json|messagepack> <items> <delayMs>
//
// The resumable client connects to <resumable-base>/streaming (instance A behind a TCP proxy
// the test cuts on demand) with `withStatefulReconnect().withAutomaticReconnect()`; a second,
// plain client connects to <other-base>/streaming (instance B, directly).
//
// The script talks to the test over stdout, one line each: `ready` once both are connected,
// `cut` whenever it wants the proxy to cut every connection now (it then waits until the
// client has resumed on a new WebSocket before it asks again), and last one JSON object
// with everything observed. Any failure goes to stderr with a non-zero exit code.
//
// Phases, each with cuts while it runs:
// 1. `stream("Counter", items, delayMs)`: three cuts, at a quarter, half and three
//    quarters of the items received; every item once and in order, then the completion.
// 2. `invoke("Sum", subject)` with 1..items fed a few at a time: two cuts mid-upload.
// 3. Client results asked from B of the resumable client on A: one whose handler asks for
//    a cut and answers after the resume, one asked while a cut is asked
//    for (the invocation and its answer race the cut).
// The hub's `Stats` is read through the resumable client before and after phase 1.

"use strict";

const signalR = require("@microsoft/signalr");
const common = require("./scenario-common");
const { sleep, write } = common;

const [resumableBase, otherBase, protocol = "json", itemsText = "5000", delayText = "1"] =
    process.argv.slice(2);
const items = Number(itemsText);
const delayMs = Number(delayText);
if (!resumableBase || !otherBase || !Number.isInteger(items) || !Number.isInteger(delayMs)) {
    console.error(
        "usage: node streams-reconnect.js <resumable-base> <other-base> <json|messagepack> <items> <delayMs>",
    );
    process.exit(2);
}

/// How long any single expected event may take before the scenario fails.
const STEP_TIMEOUT_MS = 60000;

function build(base, stateful) {
    return common.buildConnection(base + "/streaming", protocol, {
        stateful,
        options: { transport: signalR.HttpTransportType.WebSockets },
    });
}

function within(promise, what) {
    return common.within(promise, what, STEP_TIMEOUT_MS);
}


/// Counts the resumable client's resumes on a new WebSocket (its internal
/// `features.resend`, called once per reconnected transport) and asks the test for cuts.
class Cutter {
    constructor(connection) {
        this.resumes = 0;
        this.asked = 0;
        this.waiters = [];
        const features = connection.connection.features;
        const resend = features.resend;
        features.resend = async () => {
            const resent = await resend();
            this.resumes += 1;
            for (const waiter of this.waiters.splice(0)) {
                waiter();
            }
            return resent;
        };
    }

    /// Ask for a cut and wait until the client resumed after it.
    async cut(what) {
        this.asked += 1;
        const target = this.asked;
        await write("cut\n");
        while (this.resumes < target) {
            await within(new Promise((resolve) => this.waiters.push(resolve)), `resume after ${what}`);
        }
    }
}

async function stats(connection) {
    const raw = await within(connection.invoke("Stats"), "Stats");
    const out = {};
    for (const key of Object.keys(raw)) {
        out[key] = Number(raw[key]);
    }
    return out;
}

/// Phase 1: a server-to-client stream cut three times.
async function streamAcrossCuts(connection, cutter) {
    const received = [];
    let cutting = Promise.resolve();
    const thresholds = [Math.floor(items / 4), Math.floor(items / 2), Math.floor((3 * items) / 4)];
    const ended = new Promise((resolve) => {
        connection.stream("Counter", items, delayMs).subscribe({
            next: (item) => {
                received.push(Number(item));
                if (thresholds.length > 0 && received.length >= thresholds[0]) {
                    thresholds.shift();
                    // One cut at a time: the client makes one attempt to resume, and a cut
                    // during that attempt would close the connection.
                    cutting = cutting.then(() => cutter.cut(`item ${received.length}`));
                }
            },
            complete: () => resolve(null),
            error: (error) => resolve(String(error.message || error)),
        });
    });
    const error = await within(ended, `Counter(${items}, ${delayMs})`);
    await within(cutting, "the stream's cuts");
    return {
        count: received.length,
        firstMismatch: received.findIndex((item, index) => item !== index),
        error,
        cutsLeft: thresholds.length,
    };
}

/// Phase 2: an upload stream cut twice while the client feeds it.
async function uploadAcrossCuts(connection, cutter) {
    const subject = new signalR.Subject();
    const summing = connection.invoke("Sum", subject);
    const cuts = new Set([Math.floor(items / 3), Math.floor((2 * items) / 3)]);
    let cutting = Promise.resolve();
    for (let n = 1; n <= items; n++) {
        subject.next(n);
        if (cuts.has(n)) {
            // Feeding goes on while the client reconnects (the items wait in its buffer);
            // the next cut waits for this one's resume.
            await cutting;
            cutting = cutter.cut(`upload item ${n}`);
        }
        if (n % 20 === 0) {
            await sleep(delayMs);
        }
    }
    subject.complete();
    const sum = Number(await within(summing, "Sum"));
    await cutting;
    return sum;
}

/// Phase 3: client results asked from B while the resumable client's transport is cut.
async function clientResultsAcrossCuts(resumable, other, cutter) {
    resumable.on("AnswerAfterCut", async (x) => {
        await cutter.cut("AnswerAfterCut");
        return x * 2;
    });
    let answered = 0;
    resumable.on("Answer", (x) => {
        answered += 1;
        return x + 1;
    });
    const id = resumable.connectionId;
    const afterCut = await within(
        other.invoke("AskClient", id, "AnswerAfterCut", 21),
        "AskClient AnswerAfterCut",
    );
    // The cut and the call race: the invocation reaches the client on the old WebSocket
    // (and its answer may be lost with it), or is resent on the new one.
    const cut = cutter.cut("AskClient Answer");
    const duringCut = await within(other.invoke("AskClient", id, "Answer", 41), "AskClient Answer");
    await cut;
    return { afterCut: Number(afterCut), duringCut: Number(duringCut), answered };
}

async function main() {
    const resumable = build(resumableBase, true);
    const other = build(otherBase, false);
    const events = [];
    resumable.onreconnecting(() => {
        events.push("reconnecting");
    });
    resumable.onreconnected(() => {
        events.push("reconnected");
    });
    resumable.onclose((error) => {
        events.push("closed: " + (error ? error.message : "no error"));
    });
    await within(resumable.start(), "start the resumable client");
    await within(other.start(), "start the other client");
    const cutter = new Cutter(resumable);
    await write("ready\n");

    const out = { protocol };
    const before = await stats(resumable);
    out.stream = await streamAcrossCuts(resumable, cutter);
    const after = await stats(resumable);
    out.streamStats = {
        started: after.started - before.started,
        produced: after.produced - before.produced,
        cancelled: after.cancelled - before.cancelled,
        running: after.running,
    };
    out.streamResumes = cutter.resumes;

    out.sum = await uploadAcrossCuts(resumable, cutter);
    out.uploadResumes = cutter.resumes - out.streamResumes;

    out.results = await clientResultsAcrossCuts(resumable, other, cutter);
    out.resumes = cutter.resumes;
    out.cutsAsked = cutter.asked;
    out.state = resumable.state;
    out.events = events.slice();

    await other.stop();
    await resumable.stop();
    await write(JSON.stringify(out) + "\n");
}

main().then(
    () => process.exit(0),
    (error) => {
        console.error(error && error.stack ? error.stack : String(error));
        process.exit(1);
    },
);
