"""Drive the chat hub with the Python SignalR client `signalrcore` across two instances.

Usage: python chat_scenario.py URL_A URL_B PROTOCOLS

URL_A and URL_B are the chat hub URLs of two hub-server instances sharing one backplane.
PROTOCOLS names the hub protocol of each of the three clients, comma-separated, in the
order ann (on A, access token "ann"), bob (on B, access token "bob"), carol (on A,
anonymous): each is "json" (signalrcore's default), "messagepack" (chosen as
HubProtocolEncoding.binary, as signalrcore's README shows) or "messagepack-object" (a
MessagePackHubProtocol() instance handed to the builder).

Runs every chat hub method in a fixed order, waiting after each step until every client
that should receive something has it, and prints one JSON object: per client the
connection id signalrcore negotiated, the handshake it sent, and every hub message it
received as [target, *arguments]. Any error or timeout ends the script with a non-zero
exit status and a message on stderr.
"""

import logging
import sys
import threading
import time

from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HubProtocolEncoding

from scenario_common import CHAT_EVENTS, fail, succeed

# How long one step may wait for what it expects (the whole scenario is a few seconds).
STEP_TIMEOUT = 20.0


class Client:
    """One signalrcore connection and everything it received."""

    def __init__(self, name, url, protocol, token):
        self.name = name
        self.lock = threading.Condition()
        self.log = []
        self.errors = []
        self.opened = threading.Event()
        builder = HubConnectionBuilder()
        options = {}
        if token is not None:
            options["access_token_factory"] = lambda: token
        builder.with_url(url, options=options)
        if protocol == "messagepack":
            builder.with_hub_protocol(HubProtocolEncoding.binary)
        elif protocol == "messagepack-object":
            builder.with_hub_protocol(MessagePackHubProtocol())
        elif protocol != "json":
            fail(f"unknown protocol {protocol!r}")
        builder.configure_logging(logging.CRITICAL)
        self.connection = builder.build()
        self.connection.on_open(self.opened.set)
        self.connection.on_error(self._on_error)
        for event in CHAT_EVENTS:
            self.connection.on(event, self._recorder(event))

    def _recorder(self, event):
        def record(arguments):
            with self.lock:
                self.log.append([event, *arguments])
                self.lock.notify_all()

        return record

    def _on_error(self, completion):
        with self.lock:
            self.errors.append(getattr(completion, "error", str(completion)))
            self.lock.notify_all()

    def start(self):
        if not self.connection.start():
            fail(f"{self.name}: start() refused")
        if not self.opened.wait(STEP_TIMEOUT):
            fail(f"{self.name}: the connection did not open (negotiate or handshake failed)")

    def invoke(self, method, arguments):
        """Invoke and wait for the completion; a completion error fails the scenario."""
        done = threading.Event()
        self.connection.send(method, arguments, on_invocation=lambda _: done.set())
        deadline = time.monotonic() + STEP_TIMEOUT
        while not done.is_set():
            with self.lock:
                if self.errors:
                    fail(f"{self.name}: {method}{arguments} failed: {self.errors}")
            if time.monotonic() > deadline:
                fail(f"{self.name}: {method}{arguments} did not complete")
            done.wait(0.02)

    def wait_for(self, entry):
        """Wait until `entry` ([target, *arguments]) has been received."""
        with self.lock:
            if not self.lock.wait_for(lambda: entry in self.log, STEP_TIMEOUT):
                fail(f"{self.name} never received {entry}; received {self.log}")

    def connection_id(self):
        # What signalrcore negotiated and put in the WebSocket URL as ?id=.
        return self.connection.transport.connection_id

    def handshake(self):
        protocol = self.connection.protocol
        return {"protocol": protocol.protocol, "version": protocol.version}

    def report(self):
        with self.lock:
            return {
                "connectionId": self.connection_id(),
                "handshake": self.handshake(),
                "log": list(self.log),
            }


def send_to_all(sender, user, text, receivers):
    """`sender` sends `text` as `user` to everyone; wait until each of `receivers` has it."""
    sender.invoke("SendMessage", [user, text])
    for client in receivers:
        client.wait_for(["ReceiveMessage", user, text])


def send_to_room(sender, user, text, receivers):
    """`sender` sends `text` as `user` to the group "room"; wait until each of `receivers`
    has it."""
    sender.invoke("SendMessageToGroup", ["room", user, text])
    for client in receivers:
        client.wait_for(["ReceiveGroupMessage", "room", user, text])


def main():
    if len(sys.argv) != 4:
        fail("usage: chat_scenario.py URL_A URL_B PROTOCOLS")
    url_a, url_b = sys.argv[1], sys.argv[2]
    protocols = sys.argv[3].split(",")
    if len(protocols) != 3:
        fail("PROTOCOLS names three protocols: ann,bob,carol")

    ann = Client("ann", url_a, protocols[0], "ann")
    bob = Client("bob", url_b, protocols[1], "bob")
    carol = Client("carol", url_a, protocols[2], None)

    # Connect one at a time; everyone connected so far, the newcomer included, sees the
    # newcomer's own UserConnected before the next one starts (counting announcements
    # would let a late one of an earlier client stand in for it).
    connected = []
    for client in (ann, bob, carol):
        client.start()
        connected.append(client)
        for other in connected:
            other.wait_for(["UserConnected", client.connection_id()])

    # SendMessage from each instance reaches everyone on both.
    everyone = (ann, bob, carol)
    send_to_all(ann, "ann", "hello from A", everyone)
    send_to_all(bob, "bob", "hello from B", everyone)

    # Groups: ann (A) and bob (B) join "room"; carol (A) does not.
    ann.invoke("JoinGroup", ["room"])
    ann.wait_for(["UserJoinedGroup", "ann", "room"])
    bob.invoke("JoinGroup", ["room"])
    for client in (ann, bob):
        client.wait_for(["UserJoinedGroup", "bob", "room"])
    send_to_room(bob, "bob", "group hi from B", (ann, bob))
    send_to_room(ann, "ann", "group hi from A", (ann, bob))
    # A non-member may send to the group; it does not receive it.
    send_to_room(carol, "carol", "from outside", (ann, bob))
    ann.invoke("LeaveGroup", ["room"])
    bob.wait_for(["UserLeftGroup", "ann", "room"])
    send_to_room(bob, "bob", "only bob is left", (bob,))

    # A barrier from each instance: once a client has both, everything either instance
    # sent it before them has arrived (delivery is ordered per sending instance). Each
    # waits until everyone has the first: messages of two senders have no order between
    # them (ann's completion does not mean bob, on the other instance, already has it).
    send_to_all(ann, "ann", "end from A", everyone)
    send_to_all(bob, "bob", "end from B", everyone)

    # bob leaves: the others hear it from the other instance. signalrcore's stop() sends
    # no Close message and no WebSocket close frame; it closes its socket, which takes
    # effect when the server's next frame (at worst a keep-alive Ping) wakes its reader.
    bob_id = bob.connection_id()
    bob.connection.stop()
    for client in (ann, carol):
        client.wait_for(["UserDisconnected", bob_id])

    result = {"ann": ann.report(), "bob": bob.report(), "carol": carol.report()}
    ann.connection.stop()
    carol.connection.stop()
    succeed(result)


if __name__ == "__main__":
    main()
