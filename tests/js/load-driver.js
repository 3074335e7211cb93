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
//   warmupMessages  messages sent (closed loop, same window or 100) and delivered to every
//                   receiver before the measured run, through the same code, so V8 has
//                   compiled the client's paths as in a process that has been running;
//                   their arrivals are not reported (0: a cold process)
//   quietMs         once everything arrived, how long without another message before
//                   stopping (so late duplicates are still counted)
//
// The sender and the receivers are different applications in any real use, so they run on
// two threads of this process (`node:worker_threads`), each with its own event loop: the
// sender's connection on the main thread, every receiver's connection on one worker
// thread. The closed loop's count of messages delivered everywhere is shared memory the
// worker updates and the sender waits on (`Atomics.waitAsync`).
//
// Every message is `connection.send("SendMessageToGroup", group, "load", text)`, as an
// application sends without waiting for a result. The text starts with the same probe
// header as the Rust driver's (`sender:seq:sent_us:written_us:`, padded with '.'), in
// the monotonic clock both threads share (`process.hrtime`), so hub-load checks and times
// both drivers' deliveries with the same code.
//
// Output, JSON lines on stdout (written after the scenario, so writing them costs the
// measurement nothing):
//   {"type":"arrivals","receiver":i,"arrivals":[[sender,seq,sent_us,written_us,arrived_us],...]}
//       every ReceiveGroupMessage of the group, duplicates included (sender -1: no probe),
//       in chunks
//   {"type":"sent","started_us":..,"finished_us":..,"schedule_lag_us":[..] or null}
//   {"type":"error","message":".."}   a connection or send that failed during the run
//   {"type":"done","cpu_us":..}       this process's CPU time (both threads), user + system
// A failure to set up goes to stderr with a non-zero exit code.

"use strict";

const { Worker, isMainThread, parentPort, workerData } = require("node:worker_threads");
const signalR = require("@microsoft/signalr");

const config = isMainThread ? JSON.parse(process.argv[2] || "null") : workerData.config;
if (!config) {
    console.error("usage: node load-driver.js '<config JSON>' (run by hub-load --driver js)");
    process.exit(2);
}

/// Arrivals per output line: keeps each line a few hundred KB.
const CHUNK = 5000;
/// Connections opened at once while setting up receivers (as the Rust driver).
const CONNECT_CONCURRENCY = 16;
/// The probe's sender field: 0 for the measured messages, 1 for the warm-up's.
const MEASURED = 0;
const WARMUP = 1;
/// The closed loop's window while warming up an open-loop run.
const WARMUP_WINDOW = 100;

/// Microseconds on the monotonic clock, the same on both threads.
function nowUs() {
    return Number(process.hrtime.bigint() / 1000n);
}

function probeText(sender, seq, sentUs, writtenUs) {
    const header = `${sender}:${seq}:${sentUs}:${writtenUs}:`;
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

/// Errors seen during the run on this thread, the first few kept.
const errors = [];
function failed(message) {
    if (errors.length < 10) {
        errors.push(message);
    }
}

let stopping = false;

if (isMainThread) {
    sendingThread().catch((error) => {
        console.error("load driver failed:", error && error.stack ? error.stack : error);
        process.exit(1);
    });
} else {
    receivingThread(new Int32Array(workerData.counters)).catch((error) => {
        parentPort.postMessage({ type: "failed", message: error && error.stack ? error.stack : String(error) });
    });
}

// ---- The receivers' thread --------------------------------------------------------------

async function receivingThread(counters) {
    const warmupMessages = config.warmupMessages || 0;
    let lastArrivalUs = 0;
    /// Each sender's messages (index: the probe's sender field), counted alike so the
    /// warm-up runs the code the measurement runs: `delivered[seq]` receivers have it,
    /// `counters[sender]` messages reached every receiver, `complete` receivers have all.
    const books = [
        { messages: config.messages, delivered: new Uint32Array(config.messages), complete: 0 },
        { messages: warmupMessages, delivered: new Uint32Array(warmupMessages), complete: 0 },
    ];

    function receiver(index) {
        const conn = connection(config.b);
        // Per sender: every arrival (only the measured one's are reported), seqs seen.
        const own = books.map((book) => ({ arrivals: [], seen: new Uint8Array(book.messages), distinct: 0 }));
        conn.on("ReceiveGroupMessage", (group, _user, text) => {
            if (group !== config.group) {
                return;
            }
            const arrived = nowUs();
            lastArrivalUs = arrived;
            const probe = parseProbe(text);
            if (probe === null) {
                own[MEASURED].arrivals.push([-1, 0, 0, 0, arrived]);
                return;
            }
            const sender = probe[0] === WARMUP ? WARMUP : MEASURED;
            const mine = own[sender];
            mine.arrivals.push([probe[0], probe[1], probe[2], probe[3], arrived]);
            const book = books[sender];
            const seq = probe[1];
            if (probe[0] !== sender || seq >= book.messages || mine.seen[seq]) {
                return;
            }
            mine.seen[seq] = 1;
            mine.distinct += 1;
            if (mine.distinct === book.messages) {
                book.complete += 1;
            }
            book.delivered[seq] += 1;
            if (book.delivered[seq] === config.receivers) {
                Atomics.add(counters, sender, 1);
                Atomics.notify(counters, sender);
            }
        });
        conn.onclose((error) => {
            if (!stopping) {
                failed(`receiver ${index} closed: ${error ? error.message : "by the server"}`);
            }
        });
        return { conn, arrivals: own[MEASURED].arrivals };
    }

    const receivers = [];
    for (let i = 0; i < config.receivers; i++) {
        receivers.push(receiver(i));
    }
    let next = 0;
    const opener = async () => {
        while (next < receivers.length) {
            const { conn } = receivers[next++];
            await conn.start();
            await conn.invoke("JoinGroup", config.group);
        }
    };
    await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, receivers.length) }, opener));

    // Resolve when every receiver has every message and `quietMs` passed without another
    // arrival, or at `deadlineUs`.
    const drained = (deadlineUs) =>
        new Promise((resolve) => {
            const check = () => {
                const now = nowUs();
                const quiet = books[MEASURED].complete === config.receivers && now - lastArrivalUs >= config.quietMs * 1000;
                if (quiet || now >= deadlineUs) {
                    resolve();
                } else {
                    setTimeout(check, 10);
                }
            };
            check();
        });

    const sent = new Promise((resolve) => {
        parentPort.on("message", (message) => message.type === "sent" && resolve(message.finishedUs));
    });
    parentPort.postMessage({ type: "ready" });
    const finishedUs = await sent;
    await drained(finishedUs + config.drainTimeoutMs * 1000);

    stopping = true;
    for (const [index, { arrivals }] of receivers.entries()) {
        for (let at = 0; at < arrivals.length || at === 0; at += CHUNK) {
            parentPort.postMessage({ type: "arrivals", receiver: index, arrivals: arrivals.slice(at, at + CHUNK) });
        }
    }
    for (const message of errors) {
        parentPort.postMessage({ type: "error", message });
    }
    const stops = receivers.map(({ conn }) => conn.stop().catch(() => {}));
    await Promise.race([Promise.all(stops), new Promise((resolve) => setTimeout(resolve, 5000))]);
    parentPort.postMessage({ type: "finished" });
}

// ---- The sender's thread (main) ---------------------------------------------------------

/// Write one line and wait until Node handed it to the pipe: `process.exit` drops
/// whatever is still queued, and a pipe takes only so much at once.
function emit(line) {
    return new Promise((resolve, reject) => {
        process.stdout.write(JSON.stringify(line) + "\n", (error) => (error ? reject(error) : resolve()));
    });
}

/// Closed loop: keep at most `window` of `sender`'s `messages` sent and not yet delivered
/// everywhere. Gives up when the window stays full for `drainTimeoutMs` (messages lost).
async function sendWindowed(conn, counters, sender, messages, window) {
    const onError = (error) => failed(`send: ${error && error.message ? error.message : error}`);
    for (let seq = 0; seq < messages; ) {
        const delivered = Atomics.load(counters, sender);
        if (seq - delivered >= window) {
            const wait = Atomics.waitAsync(counters, sender, delivered, config.drainTimeoutMs);
            const outcome = wait.async ? await wait.value : wait.value;
            if (outcome === "timed-out") {
                failed(`sender gave up at message ${seq}${sender === WARMUP ? " of the warm-up" : ""}: ${window} messages stayed undelivered for ${config.drainTimeoutMs} ms`);
                return false;
            }
            continue;
        }
        const now = nowUs();
        conn.send("SendMessageToGroup", config.group, "load", probeText(sender, seq, now, now)).catch(onError);
        seq += 1;
    }
    return true;
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
                    .send("SendMessageToGroup", config.group, "load", probeText(MEASURED, seq, due(seq), written))
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

async function sendingThread() {
    // Messages delivered to every receiver, per sender field (measured, warm-up).
    const counters = new Int32Array(new SharedArrayBuffer(8));
    const worker = new Worker(__filename, { workerData: { config, counters: counters.buffer } });
    // The worker's lines go out in the order it posted them; `finished` ends its part.
    let output = Promise.resolve();
    let ready;
    const isReady = new Promise((resolve, reject) => {
        ready = { resolve, reject };
    });
    const workerDone = new Promise((resolve, reject) => {
        worker.on("message", (message) => {
            if (message.type === "ready") {
                ready.resolve();
            } else if (message.type === "failed") {
                const error = new Error(`receivers' thread: ${message.message}`);
                ready.reject(error);
                reject(error);
            } else if (message.type === "finished") {
                output.then(resolve, reject);
            } else {
                output = output.then(() => emit(message));
            }
        });
        worker.on("error", (error) => {
            ready.reject(error);
            reject(error);
        });
    });
    await isReady;

    const sender = connection(config.a);
    sender.onclose((error) => {
        if (!stopping) {
            failed(`sender closed: ${error ? error.message : "by the server"}`);
        }
    });
    await sender.start();

    const closedLoop = config.window !== null && config.window !== undefined;
    const warmupMessages = config.warmupMessages || 0;
    if (warmupMessages > 0) {
        const window = closedLoop ? config.window : WARMUP_WINDOW;
        const warm = await sendWindowed(sender, counters, WARMUP, warmupMessages, window);
        // Every warm-up message reached every receiver (or the run is already failed):
        // nothing of it is in flight when the measurement starts.
        while (warm && Atomics.load(counters, WARMUP) < warmupMessages) {
            const seen = Atomics.load(counters, WARMUP);
            const wait = Atomics.waitAsync(counters, WARMUP, seen, config.drainTimeoutMs);
            if ((wait.async ? await wait.value : wait.value) === "timed-out") {
                failed(`the warm-up's last messages stayed undelivered for ${config.drainTimeoutMs} ms`);
                break;
            }
        }
    }

    const startedUs = nowUs();
    const lags = closedLoop
        ? (await sendWindowed(sender, counters, MEASURED, config.messages, config.window), null)
        : await sendScheduled(sender);
    const finishedUs = nowUs();
    worker.postMessage({ type: "sent", finishedUs });
    await workerDone;

    stopping = true;
    await emit({ type: "sent", started_us: startedUs, finished_us: finishedUs, schedule_lag_us: lags });
    for (const message of errors) {
        await emit({ type: "error", message });
    }
    await Promise.race([sender.stop().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 5000))]);
    const cpu = process.cpuUsage();
    await emit({ type: "done", cpu_us: cpu.user + cpu.system });
    process.exit(0);
}
