"""Streams both ways with the Python SignalR client `signalrcore` across two instances.

Usage: python signalrcore_streams.py URL_A URL_B PROTOCOL ITEMS

URL_A and URL_B are the streaming example hub (/streaming) of two hub-server instances
sharing one backplane; PROTOCOL is "json" or "messagepack" (HubProtocolEncoding.binary).
Client a (on A) reads `stream("Counter", [ITEMS, 0])`; client b (on B) uploads 1..ITEMS to
`Sum` twice: once through signalrcore's own `Subject` (which sends a fire-and-forget
invocation, so no sum comes back; the server's `Stats.lastSum` shows it), once through the
same Subject with the test's workarounds below, which gets the sum back in the completion.
Prints one JSON object with what each client observed; any error or timeout ends the
script with a non-zero exit status and a message on stderr.

signalrcore 1.0.2's upload messages, and the workarounds (here only, not in the server):
- `Subject.start()` sends `InvocationClientStreamMessage`, which has no `invocation_id`:
  the invocation is fire-and-forget and the method's result never returns. The workaround
  sends the same message with an `invocation_id` attribute and registers a handler for it.
- Over MessagePack, that message is encoded by attribute order without the invocationId
  slot (`[1, headers, target, arguments, streamIds]`), and `CompletionClientStreamMessage`
  without the ResultKind (`[3, headers, invocationId]`): ASP.NET Core rejects both, as our
  server does. With the `invocation_id` attribute the invocation is well formed; the
  completion gets a `result_kind` attribute of 2 (void).
signalrcore does not answer client results: `on(...)` handlers are called and their return
value dropped (signalrcore/hub/base_hub_connection.py, `handler(message.arguments)` in
`__on_invocation_message`), so no client-result step runs here.
"""

import logging
import sys
import threading
import uuid

from signalrcore.hub.handlers import InvocationHandler
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.messages.completion_message import CompletionClientStreamMessage
from signalrcore.messages.invocation_message import InvocationClientStreamMessage
from signalrcore.subject import Subject
from signalrcore.types import HubProtocolEncoding

from scenario_common import fail, succeed

# How long one step may wait for what it expects.
STEP_TIMEOUT = 30.0


def connect(url, protocol):
    builder = HubConnectionBuilder().with_url(url)
    if protocol == "messagepack":
        builder.with_hub_protocol(HubProtocolEncoding.binary)
    elif protocol != "json":
        fail(f"unknown protocol {protocol!r}")
    # Errors only: signalrcore logs (and otherwise swallows) messages it cannot parse.
    builder.configure_logging(logging.ERROR)
    connection = builder.build()
    opened = threading.Event()
    errors = []
    connection.on_open(opened.set)
    connection.on_error(lambda completion: errors.append(getattr(completion, "error", str(completion))))
    if not connection.start():
        fail(f"{url}: start() refused")
    if not opened.wait(STEP_TIMEOUT):
        fail(f"{url}: the connection did not open")
    return connection, errors


def invoke(connection, errors, method, arguments):
    """Invoke and wait for the completion's result; a completion error fails."""
    done = threading.Event()
    result = {}

    def completed(message):
        result["value"] = message.result
        done.set()

    connection.send(method, arguments, on_invocation=completed)
    if not done.wait(STEP_TIMEOUT):
        fail(f"{method}{arguments} did not complete; errors: {errors}")
    return result["value"]


def read_stream(connection, count):
    """Every item of `Counter(count, 0)` and how the stream ended."""
    items = []
    ended = threading.Event()
    outcome = {"completed": False, "error": None}

    def complete(_message):
        outcome["completed"] = True
        ended.set()

    def error(message):
        outcome["error"] = str(getattr(message, "error", message))
        ended.set()

    connection.stream("Counter", [count, 0]).subscribe(
        {"next": items.append, "complete": complete, "error": error}
    )
    if not ended.wait(STEP_TIMEOUT):
        fail(f"Counter({count}) did not end; {len(items)} items so far")
    return {"items": items, **outcome}


def plain_upload(connection, errors, count):
    """signalrcore's own upload: no result comes back; read the server's Stats after."""
    subject = Subject()
    connection.send("Sum", subject)
    for n in range(1, count + 1):
        subject.next(n)
    subject.complete()
    # The upload's messages and these invocations go out in order on one connection, but
    # the fire-and-forget Sum may still be summing: wait for its total to show.
    expected = count * (count + 1) // 2
    stats = invoke(connection, errors, "Stats", [])
    for _ in range(100):
        if stats["lastSum"] == expected:
            break
        threading.Event().wait(0.05)
        stats = invoke(connection, errors, "Stats", [])
    return stats["lastSum"]


class CompletionWithResultKind(CompletionClientStreamMessage):
    """The end of an upload stream, with the void ResultKind MessagePack needs."""

    def __init__(self, invocation_id):
        super().__init__(invocation_id)
        self.result_kind = 2


def upload_with_result(connection, errors, protocol, count):
    """The same upload, as a blocking invocation that returns the sum."""
    subject = Subject()
    subject.connection = connection
    subject.target = "Sum"
    invocation_id = str(uuid.uuid4())
    done = threading.Event()
    result = {}

    def completed(message):
        result["value"] = message.result
        done.set()

    connection.stream_handlers[invocation_id].append(InvocationHandler(invocation_id, completed))
    start = InvocationClientStreamMessage([subject.invocation_id], "Sum", [])
    start.invocation_id = invocation_id
    connection.transport.send(start)
    for n in range(1, count + 1):
        subject.next(n)
    if protocol == "messagepack":
        connection.transport.send(CompletionWithResultKind(subject.invocation_id))
    else:
        subject.complete()
    if not done.wait(STEP_TIMEOUT):
        fail(f"Sum did not complete; errors: {errors}")
    return result["value"]


def main():
    if len(sys.argv) != 5:
        fail("usage: signalrcore_streams.py URL_A URL_B PROTOCOL ITEMS")
    url_a, url_b, protocol, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    a, a_errors = connect(url_a, protocol)
    b, b_errors = connect(url_b, protocol)
    out = {"protocol": protocol}

    before = invoke(a, a_errors, "Stats", [])
    out["stream"] = read_stream(a, count)
    after = invoke(a, a_errors, "Stats", [])
    out["streamStats"] = {
        key: after[key] - before[key] for key in ("started", "produced", "cancelled")
    }

    if protocol == "messagepack":
        # The plain upload cannot work over MessagePack (see above): the server closes
        # the connection on its malformed invocation.
        out["plainUploadLastSum"] = None
    else:
        out["plainUploadLastSum"] = plain_upload(b, b_errors, count)
    out["sum"] = upload_with_result(b, b_errors, protocol, count)
    out["errors"] = a_errors + b_errors

    a.stop()
    b.stop()
    succeed(out)


if __name__ == "__main__":
    main()
