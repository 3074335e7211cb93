"""Drive the chat hub with the asyncio Python SignalR client `pysignalr` across two instances.

Usage: python pysignalr_scenario.py URL_A URL_B PROTOCOLS

The same scenario and the same output as chat_scenario.py (which drives signalrcore): ann
(on A, access token "ann"), bob (on B, access token "bob") and carol (on A, anonymous), each
with the hub protocol PROTOCOLS names for it ("json" or "messagepack"), run every chat hub
method in a fixed order, waiting after each step until every client that should receive
something has it; the script prints one JSON object with, per client, the connection id
pysignalr negotiated, the handshake it sent and every hub message it received as
[target, *arguments]. Any error or timeout ends it with a non-zero exit status.

pysignalr negotiates without `negotiateVersion` (version 0: the `connectionId` is the id it
presents as ?id=), sends handshake version 1, and, given an access token factory, sends the
token as an `Authorization` header from its WebSocket request on.
"""

import asyncio
import logging
import sys
from urllib.parse import parse_qs, urlparse

from pysignalr.client import SignalRClient
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from scenario_common import CHAT_EVENTS, fail, succeed

# How long one step may wait for what it expects (the whole scenario is a few seconds).
STEP_TIMEOUT = 20.0


class Client:
    """One pysignalr connection and everything it received."""

    def __init__(self, name, url, protocol, token):
        self.name = name
        self.log = []
        self.errors = []
        self.changed = asyncio.Condition()
        self.opened = asyncio.Event()
        if protocol == "json":
            self.protocol = JSONProtocol()
        elif protocol == "messagepack":
            self.protocol = MessagepackProtocol()
        else:
            fail(f"unknown protocol {protocol!r}")
        options = {"protocol": self.protocol}
        if token is not None:
            # pysignalr's negotiate goes out before it calls the factory: the header
            # given here makes the negotiate request carry the token too.
            options["headers"] = {"Authorization": f"Bearer {token}"}
            options["access_token_factory"] = lambda: token
        self.client = SignalRClient(url, **options)
        self.client.on_open(self._on_open)
        self.client.on_error(self._on_error)
        for event in CHAT_EVENTS:
            self.client.on(event, self._recorder(event))
        self.task = None

    async def _on_open(self):
        self.opened.set()

    def _recorder(self, event):
        async def record(arguments):
            async with self.changed:
                self.log.append([event, *arguments])
                self.changed.notify_all()

        return record

    async def _on_error(self, completion):
        async with self.changed:
            self.errors.append(completion.error)
            self.changed.notify_all()

    async def start(self):
        self.task = asyncio.create_task(self.client.run())
        try:
            await asyncio.wait_for(self.opened.wait(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.name}: the connection did not open (negotiate or handshake failed)")

    async def invoke(self, method, arguments):
        """Invoke and wait for the completion; a completion error fails the scenario."""
        done = asyncio.Event()

        async def completed(message):
            if message.error:
                self.errors.append(message.error)
            done.set()

        await self.client.send(method, arguments, on_invocation=completed)
        try:
            await asyncio.wait_for(done.wait(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.name}: {method}{arguments} did not complete")
        if self.errors:
            fail(f"{self.name}: {method}{arguments} failed: {self.errors}")

    async def wait_until(self, predicate, what):
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: predicate(self.log)), STEP_TIMEOUT
                )
            except asyncio.TimeoutError:
                fail(f"{self.name} never received {what}; received {self.log}")

    async def wait_for(self, entry):
        await self.wait_until(lambda log: entry in log, entry)

    def connection_id(self):
        # The id pysignalr put in its WebSocket URL after negotiate.
        query = parse_qs(urlparse(self.client._transport._url).query)
        return query["id"][0]

    async def stop(self):
        """Stop: end the run loop (so it does not reconnect), then close the socket."""
        connection = self.client._transport._ws
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass
        if connection is not None:
            await connection.close()

    def report(self):
        return {
            "connectionId": self.connection_id(),
            "handshake": {"protocol": self.protocol.protocol, "version": self.protocol.version},
            "log": list(self.log),
        }


async def scenario(url_a, url_b, protocols):
    ann = Client("ann", url_a, protocols[0], "ann")
    bob = Client("bob", url_b, protocols[1], "bob")
    carol = Client("carol", url_a, protocols[2], None)

    # Connect one at a time; everyone connected so far, the newcomer included, sees the
    # newcomer's own UserConnected before the next one starts (counting announcements
    # would let a late one of an earlier client stand in for it).
    connected = []
    for client in (ann, bob, carol):
        await client.start()
        connected.append(client)
        for other in connected:
            await other.wait_for(["UserConnected", client.connection_id()])

    everyone = (ann, bob, carol)
    await ann.invoke("SendMessage", ["ann", "hello from A"])
    for client in everyone:
        await client.wait_for(["ReceiveMessage", "ann", "hello from A"])
    await bob.invoke("SendMessage", ["bob", "hello from B"])
    for client in everyone:
        await client.wait_for(["ReceiveMessage", "bob", "hello from B"])

    await ann.invoke("JoinGroup", ["room"])
    await ann.wait_for(["UserJoinedGroup", "ann", "room"])
    await bob.invoke("JoinGroup", ["room"])
    for client in (ann, bob):
        await client.wait_for(["UserJoinedGroup", "bob", "room"])
    await bob.invoke("SendMessageToGroup", ["room", "bob", "group hi from B"])
    for client in (ann, bob):
        await client.wait_for(["ReceiveGroupMessage", "room", "bob", "group hi from B"])
    await ann.invoke("SendMessageToGroup", ["room", "ann", "group hi from A"])
    for client in (ann, bob):
        await client.wait_for(["ReceiveGroupMessage", "room", "ann", "group hi from A"])
    await carol.invoke("SendMessageToGroup", ["room", "carol", "from outside"])
    for client in (ann, bob):
        await client.wait_for(["ReceiveGroupMessage", "room", "carol", "from outside"])
    await ann.invoke("LeaveGroup", ["room"])
    await bob.wait_for(["UserLeftGroup", "ann", "room"])
    await bob.invoke("SendMessageToGroup", ["room", "bob", "only bob is left"])
    await bob.wait_for(["ReceiveGroupMessage", "room", "bob", "only bob is left"])

    # Barriers from each instance (see chat_scenario.py).
    await ann.invoke("SendMessage", ["ann", "end from A"])
    for client in everyone:
        await client.wait_for(["ReceiveMessage", "ann", "end from A"])
    await bob.invoke("SendMessage", ["bob", "end from B"])
    for client in everyone:
        await client.wait_for(["ReceiveMessage", "bob", "end from B"])

    bob_id = bob.connection_id()
    await bob.stop()
    for client in (ann, carol):
        await client.wait_for(["UserDisconnected", bob_id])

    result = {"ann": ann.report(), "bob": bob.report(), "carol": carol.report()}
    await ann.stop()
    await carol.stop()
    return result


def main():
    if len(sys.argv) != 4:
        fail("usage: pysignalr_scenario.py URL_A URL_B PROTOCOLS")
    protocols = sys.argv[3].split(",")
    if len(protocols) != 3:
        fail("PROTOCOLS names three protocols: ann,bob,carol")
    logging.basicConfig(level=logging.CRITICAL)
    result = asyncio.run(scenario(sys.argv[1], sys.argv[2], protocols))
    succeed(result)


if __name__ == "__main__":
    main()
