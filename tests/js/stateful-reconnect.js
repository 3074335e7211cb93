// Drives the official SignalR JavaScript client with stateful reconnect across dropped
// WebSockets; run by tests/tests/hub_stateful_reconnect.rs.
//
//   node stateful-reconnect.js <receiver-base> <sender-base> <json|messagepack> <count>
//
// The receiver connects to <receiver-base>/chathub with `withStatefulReconnect()` (the
// test puts a TCP proxy in front of it that cuts every connection now and then); the
// sender connects to <sender-base>/chathub, another server of the cluster, and sends
// `count` messages with `send("SendMessage", "sender", "<n>")`, a few at a time. Prints
// `ready` once both are connected (the test starts cutting then), then one JSON object:
// every message text the receiver got, in order, the connection events the app saw, and
// how often the client resumed on a new WebSocket.

"use strict";

const { buildConnection, sleep, write } = require("./scenario-common");

const [receiverBase, senderBase, protocol = "json", countText = "3000"] = process.argv.slice(2);
const count = Number(countText);
if (!receiverBase || !senderBase || !Number.isInteger(count)) {
    console.error("usage: node stateful-reconnect.js <receiver-base> <sender-base> <json|messagepack> <count>");
    process.exit(2);
}

/// How long the receiver may take to get everything after the last send.
const DRAIN_TIMEOUT_MS = 60000;

function build(base, stateful) {
    return buildConnection(base + "/chathub", protocol, { stateful });
}

async function main() {
    const receiver = build(receiverBase, true);
    const sender = build(senderBase, false);
    const events = [];
    const received = [];
    let allArrived;
    const arrived = new Promise((resolve) => {
        allArrived = resolve;
    });
    receiver.on("ReceiveMessage", (user, text) => {
        if (user === "sender") {
            received.push(text);
            if (received.length >= count) {
                allArrived();
            }
        }
    });
    // Handlers must return undefined: a returned value would be a client result.
    receiver.onreconnecting(() => {
        events.push("reconnecting");
    });
    receiver.onclose((error) => {
        events.push("closed: " + (error ? error.message : "no error"));
        allArrived();
    });
    await receiver.start();
    // Count the client's resumes on a new WebSocket (its internal `features.resend`,
    // called once per reconnected transport), to prove the cuts really happened.
    let resumes = 0;
    const features = receiver.connection.features;
    const resend = features.resend;
    features.resend = () => {
        resumes += 1;
        return resend();
    };
    await sender.start();
    await write("ready\n");
    for (let n = 0; n < count; n++) {
        await sender.send("SendMessage", "sender", String(n));
        if (n % 10 === 9) {
            await sleep(10);
        }
    }
    const timer = setTimeout(allArrived, DRAIN_TIMEOUT_MS);
    await arrived;
    clearTimeout(timer);
    const state = receiver.state;
    const seen = events.slice();
    await sender.stop();
    await receiver.stop();
    await write(JSON.stringify({ received, events: seen, state, resumes }) + "\n");
}

main().then(
    () => process.exit(0),
    (error) => {
        console.error(error && error.stack ? error.stack : String(error));
        process.exit(1);
    },
);
