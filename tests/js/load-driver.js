// The `hub-load --driver js` load driver: one message scenario (S1, S2, S3 or the burst)
// driven by the official SignalR JavaScript client (@microsoft/signalr), so the figures
// include what that client does: its send queue that coalesces messages written while a
// send is in flight, its keep-alive pings, its JSON (or MessagePack) encoding.
//
// Usage: node load-driver.js '<config JSON>'   (hub-load builds the config)
//
//   a, b            base URLs of instance A (the sender's) and B (the receivers')
//   group           the group the receivers join and the sender sends to
//   receivers       receivers on B
//   messages        messages the sender sends (sequence numbers 0..messages)
//   window          closed loop: at most this many messages sent and not yet delivered
//                   to every receiver (null for open loop)
//   rate            open loop: messages per second on a fixed schedule (null for closed)
//   payload         length of each message's text
//   protocol        "json" (default) or "messagepack"
//   drainTimeoutMs  how long to wait for deliveries after the last send
//   quietMs         once everything arrived, how long without another message before
//                   stopping (so late duplicates are still counted)
//
// Every message is `connection.send("SendMessageToGroup", group, "load", text)`, as an
// application sends without waiting for a result. The text starts with the same probe
// header as the Rust driver's (`sender:seq:sent_us:written_us:`, padded with '.'), in
// this process's clock, so hub-load checks and times both drivers' deliveries with the
// same code.
//
// Output, JSON lines on stdout (written after the scenario, so writing them costs the
// measurement nothing):
//   {"type":"arrivals","receiver":i,"arrivals":[[sender,seq,sent_us,written_us,arrived_us],...]}
//       every ReceiveGroupMessage of the group, duplicates included (sender -1: no probe),
//       in chunks
//   {"type":"sent","started_us":..,"finished_us":..,"schedule_lag_us":[..] or null}
//   {"type":"error","message":".."}   a connection or send that failed during the run
//   {"type":"done","cpu_us":..}       this process's CPU time, user + system
// A failure to set up goes to stderr with a non-zero exit code.

"use strict";

const { performance } = require("node:perf_hooks");
const signalR = require("@microsoft/signalr");

const config = JSON.parse(process.argv[2] || "null");
if (!config) {
    console.error("usage: node load-driver.js '<config JSON>' (run by hub-load --driver js)");
    process.exit(2);
}

/// Arrivals per output line: keeps each line a few hundred KB.
const CHUNK = 5000;
/// Connections opened at once while setting up receivers (as the Rust driver).
const CONNECT_CONCURRENCY = 16;

/// Microseconds on this process's clock; senders and receivers share it.
function nowUs() {
    return Math.round(performance.now() * 1000);
}

/// Write one line and wait until Node handed it to the pipe: `process.exit` drops
/// whatever is still queued, and a pipe takes only so much at once.
function emit(line) {
    return new Promise((resolve, reject) => {
        process.stdout.write(JSON.stringify(line) + "\n", (error) => (error ? reject(error) : resolve()));
    });
}

function probeText(seq, sentUs, writtenUs) {
    const header = `0:${seq}:${sentUs}:${writtenUs}:`;
    return header.length < config.payload ? header + ".".repeat(config.payload - header.length) : header;
}

/// The probe at the start of `text`: [sender, seq, sent, written], or null.
function parseProbe(text) {
    if (typeof text !== "string") {
        return null;
    }
    const fields = text.split(":", 5);
    if (fields.length < 5) {
        return null;
    }
    const numbers = fields.slice(0, 4).map(Number);
    return numbers.every(Number.isSafeInteger) && numbers.every((n) => n >= 0) ? numbers : null;
}

function connection(base) {
    const builder = new signalR.HubConnectionBuilder()
        .withUrl(base + "/chathub", { transport: signalR.HttpTransportType.WebSockets })
        .configureLogging(signalR.LogLevel.Warning);
    if (config.protocol === "messagepack") {
        const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");
        builder.withHubProtocol(new MessagePackHubProtocol());
    }
    const conn = builder.build();
    // The chat hub's other messages, which a chat application handles (the client warns
    // about methods without a handler).
    for (const method of ["UserConnected", "UserDisconnected", "UserJoinedGroup", "UserLeftGroup", "ReceiveMessage"]) {
        conn.on(method, () => {});
    }
    return conn;
}

/// Errors seen during the run, the first few of each kind kept.
const errors = [];
function failed(message) {
    if (errors.length < 10) {
        errors.push(message);
    }
}

let stopping = false;

/// Delivery state shared by the receivers and the closed-loop sender.
const deliveredTo = new Uint32Array(config.messages);
let fullyDelivered = 0;
/// Resolves the closed-loop sender's wait for window room: true on progress, false when
/// it gave up.
let wakeSender = null;
/// When the closed-loop sender last started waiting for window room.
let lastProgressUs = 0;
let lastArrivalUs = 0;
let complete = 0;

function receiver(index) {
    const conn = connection(config.b);
    const arrivals = [];
    const seen = new Uint8Array(config.messages);
    let distinct = 0;
    conn.on("ReceiveGroupMessage", (group, _user, text) => {
        if (group !== config.group) {
            return;
        }
        const arrived = nowUs();
        lastArrivalUs = arrived;
        const probe = parseProbe(text);
        if (probe === null) {
            arrivals.push([-1, 0, 0, 0, arrived]);
            return;
        }
        arrivals.push([probe[0], probe[1], probe[2], probe[3], arrived]);
        const seq = probe[1];
        if (probe[0] !== 0 || seq >= config.messages || seen[seq]) {
            return;
        }
        seen[seq] = 1;
        distinct += 1;
        if (distinct === config.messages) {
            complete += 1;
        }
        deliveredTo[seq] += 1;
        if (deliveredTo[seq] === config.receivers) {
            fullyDelivered += 1;
            if (wakeSender) {
                const wake = wakeSender;
                wakeSender = null;
                wake(true);
            }
        }
    });
    conn.onclose((error) => {
        if (!stopping) {
            failed(`receiver ${index} closed: ${error ? error.message : "by the server"}`);
        }
    });
    return { conn, arrivals };
}

async function openReceivers() {
    const receivers = [];
    for (let i = 0; i < config.receivers; i++) {
        receivers.push(receiver(i));
    }
    let next = 0;
    const worker = async () => {
        while (next < receivers.length) {
            const { conn } = receivers[next++];
            await conn.start();
            await conn.invoke("JoinGroup", config.group);
        }
    };
    await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, receivers.length) }, worker));
    return receivers;
}

/// Closed loop: keep at most `window` messages sent and not yet delivered everywhere.
/// Gives up when the window stays full for `drainTimeoutMs` (messages lost).
async function sendWindowed(sender) {
    const onError = (error) => failed(`send: ${error && error.message ? error.message : error}`);
    const watchdog = setInterval(() => {
        if (wakeSender && nowUs() - lastProgressUs > config.drainTimeoutMs * 1000) {
            const wake = wakeSender;
            wakeSender = null;
            wake(false);
        }
    }, 100);
    try {
        for (let seq = 0; seq < config.messages; ) {
            if (seq - fullyDelivered >= config.window) {
                lastProgressUs = nowUs();
                const progressed = await new Promise((resolve) => {
                    wakeSender = resolve;
                });
                if (!progressed) {
                    failed(`sender gave up at message ${seq}: ${config.window} messages stayed undelivered for ${config.drainTimeoutMs} ms`);
                    break;
                }
                continue;
            }
            const now = nowUs();
            sender.send("SendMessageToGroup", config.group, "load", probeText(seq, now, now)).catch(onError);
            seq += 1;
        }
    } finally {
        clearInterval(watchdog);
    }
    return null;
}

/// Open loop: each message at its scheduled time, whatever was delivered. Stamped with
/// the scheduled time (so a late sender's lateness counts as latency) and the time of
/// writing; the difference is the schedule lag, reported.
function sendScheduled(sender) {
    const onError = (error) => failed(`send: ${error && error.message ? error.message : error}`);
    const started = nowUs();
    const due = (seq) => started + Math.floor((seq * 1e6) / config.rate);
    const lags = [];
    let seq = 0;
    return new Promise((resolve) => {
        const tick = () => {
            const now = nowUs();
            while (seq < config.messages && due(seq) <= now) {
                const written = nowUs();
                lags.push(written - due(seq));
                sender
                    .send("SendMessageToGroup", config.group, "load", probeText(seq, due(seq), written))
                    .catch(onError);
                seq += 1;
            }
            if (seq < config.messages) {
                setTimeout(tick, Math.max(0, (due(seq) - nowUs()) / 1000));
            } else {
                resolve(lags);
            }
        };
        tick();
    });
}

/// Resolve when every receiver has every message and `quietMs` passed without another
/// arrival, or at `deadlineUs`.
function drained(deadlineUs) {
    return new Promise((resolve) => {
        const check = () => {
            const now = nowUs();
            const quiet = complete === config.receivers && now - lastArrivalUs >= config.quietMs * 1000;
            if (quiet || now >= deadlineUs) {
                resolve();
            } else {
                setTimeout(check, 10);
            }
        };
        check();
    });
}

(async () => {
    const receivers = await openReceivers();
    const sender = connection(config.a);
    sender.onclose((error) => {
        if (!stopping) {
            failed(`sender closed: ${error ? error.message : "by the server"}`);
        }
    });
    await sender.start();

    const startedUs = nowUs();
    const lags = config.window !== null && config.window !== undefined ? await sendWindowed(sender) : await sendScheduled(sender);
    const finishedUs = nowUs();
    await drained(finishedUs + config.drainTimeoutMs * 1000);

    stopping = true;
    for (const [index, { arrivals }] of receivers.entries()) {
        for (let at = 0; at < arrivals.length || at === 0; at += CHUNK) {
            await emit({ type: "arrivals", receiver: index, arrivals: arrivals.slice(at, at + CHUNK) });
        }
    }
    await emit({ type: "sent", started_us: startedUs, finished_us: finishedUs, schedule_lag_us: lags });
    for (const message of errors) {
        await emit({ type: "error", message });
    }
    const stops = [sender, ...receivers.map((r) => r.conn)].map((conn) => conn.stop().catch(() => {}));
    await Promise.race([Promise.all(stops), new Promise((resolve) => setTimeout(resolve, 5000))]);
    const cpu = process.cpuUsage();
    await emit({ type: "done", cpu_us: cpu.user + cpu.system });
    process.exit(0);
})().catch((error) => {
    console.error("load driver failed:", error && error.stack ? error.stack : error);
    process.exit(1);
});
