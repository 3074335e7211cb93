"""Streams both ways and client results with the asyncio Python client `pysignalr`.

Usage: python pysignalr_streams.py URL_A URL_B PROTOCOL ITEMS

URL_A and URL_B are the streaming example hub (/streaming) of two hub-server instances
sharing one backplane; PROTOCOL is "json" or "messagepack". Client a (on A) reads
`stream("Counter", [ITEMS, 0])`; client b (on B) uploads 1..ITEMS to `Sum` twice: through
pysignalr's `client_stream()` (which sends a fire-and-forget invocation, so no sum comes
back; the server's `Stats.lastSum` shows it), and through the same `ClientStream` started
as a blocking invocation (the workaround below), which gets the sum back; then b asks A,
through `AskClient`, for a client result from a, whose `on("GetAnswer")` handler returns
a value. Prints one JSON object with what each client observed; any error or timeout ends
the script with a non-zero exit status and a message on stderr.

pysignalr 1.3.3's `ClientStream.invoke()` sends `InvocationClientStreamMessage` without
an `invocation_id` (pysignalr/client.py, `ClientStream.invoke`): the method's result never
returns. The message type has an `invocation_id` field, so the workaround sends it with one
and registers a completion handler (in this test only; the server needs no change).
"""

import asyncio
import logging
import sys
import uuid
from urllib.parse import parse_qs, urlparse

from pysignalr.client import ClientStream, SignalRClient
from pysignalr.messages import InvocationClientStreamMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

from scenario_common import fail, succeed

# How long one step may wait for what it expects.
STEP_TIMEOUT = 30.0


async def within(awaitable, what):
    try:
        return await asyncio.wait_for(awaitable, STEP_TIMEOUT)
    except asyncio.TimeoutError:
        fail(f"timed out: {what}")


class Client:
    """One pysignalr connection, run in the background."""

    def __init__(self, url, protocol):
        if protocol == "json":
            chosen = JSONProtocol()
        elif protocol == "messagepack":
            chosen = MessagepackProtocol()
        else:
            fail(f"unknown protocol {protocol!r}")
        self.client = SignalRClient(url, protocol=chosen)
        self.errors = []
        self.opened = asyncio.Event()

        async def on_open():
            self.opened.set()

        async def on_error(completion):
            self.errors.append(completion.error)

        self.client.on_open(on_open)
        self.client.on_error(on_error)
        self.task = None

    async def start(self):
        self.task = asyncio.create_task(self.client.run())
        await within(self.opened.wait(), "the connection opens")

    def connection_id(self):
        # The id pysignalr put in its WebSocket URL after negotiate.
        return parse_qs(urlparse(self.client._transport._url).query)["id"][0]

    async def invoke(self, method, arguments):
        """Invoke and wait for the completion's result; a completion error fails."""
        done = asyncio.get_running_loop().create_future()

        async def completed(message):
            if message.error:
                fail(f"{method}{arguments} failed: {message.error}")
            done.set_result(message.result)

        await self.client.send(method, arguments, on_invocation=completed)
        return await within(done, f"{method}{arguments}")

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


async def read_stream(a, count):
    items = []
    ended = asyncio.get_running_loop().create_future()

    async def on_next(item):
        items.append(item)

    async def on_complete(message):
        if not ended.done():
            ended.set_result(None)

    async def on_error(message):
        if not ended.done():
            ended.set_result(str(message.error))

    await a.client.stream("Counter", [count, 0], on_next, on_complete, on_error)
    error = await within(ended, f"Counter({count})")
    return {"items": items, "completed": error is None, "error": error}


async def plain_upload(b, count):
    """pysignalr's own upload: no result comes back; the server's Stats show the sum."""
    async with b.client.client_stream("Sum") as stream:
        for n in range(1, count + 1):
            await stream.send(n)
    expected = count * (count + 1) // 2
    stats = await b.invoke("Stats", [])
    for _ in range(100):
        if stats["lastSum"] == expected:
            break
        await asyncio.sleep(0.05)
        stats = await b.invoke("Stats", [])
    return stats["lastSum"]


async def upload_with_result(b, count):
    """The same upload started as a blocking invocation, which returns the sum."""
    stream = ClientStream(b.client._transport, "Sum")
    invocation_id = str(uuid.uuid4())
    done = asyncio.get_running_loop().create_future()

    async def completed(message):
        done.set_result((message.result, message.error))

    b.client._invocation_handlers[invocation_id] = completed
    await b.client._transport.send(
        InvocationClientStreamMessage([stream.invocation_id], "Sum", [], invocation_id=invocation_id)
    )
    for n in range(1, count + 1):
        await stream.send(n)
    await stream.complete()
    result, error = await within(done, "Sum")
    if error:
        fail(f"Sum failed: {error}")
    return result


async def scenario(url_a, url_b, protocol, count):
    a = Client(url_a, protocol)
    b = Client(url_b, protocol)
    await a.start()
    await b.start()
    out = {"protocol": protocol}

    before = await a.invoke("Stats", [])
    out["stream"] = await read_stream(a, count)
    after = await a.invoke("Stats", [])
    out["streamStats"] = {
        key: after[key] - before[key] for key in ("started", "produced", "cancelled")
    }

    out["plainUploadLastSum"] = await plain_upload(b, count)
    out["sum"] = await upload_with_result(b, count)

    asked = []

    async def get_answer(arguments):
        asked.append(arguments)
        return arguments[0] * 2

    a.client.on("GetAnswer", get_answer)
    out["answer"] = await b.invoke("AskClient", [a.connection_id(), "GetAnswer", 21])
    out["asked"] = asked
    out["errors"] = a.errors + b.errors

    await a.stop()
    await b.stop()
    return out


def main():
    if len(sys.argv) != 5:
        fail("usage: pysignalr_streams.py URL_A URL_B PROTOCOL ITEMS")
    logging.basicConfig(level=logging.CRITICAL)
    result = asyncio.run(scenario(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
    succeed(result)


if __name__ == "__main__":
    main()
