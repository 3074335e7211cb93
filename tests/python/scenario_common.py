"""What the Python scenario scripts share: the chat hub's events, and how a script fails.

The scripts run from this directory (`python SCRIPT.py ...`), so they import this module
by name.
"""

import json
import os
import sys

# Every server-to-client method of the chat hub contract.
CHAT_EVENTS = [
    "ReceiveMessage",
    "ReceiveGroupMessage",
    "UserJoinedGroup",
    "UserLeftGroup",
    "UserConnected",
    "UserDisconnected",
]


def fail(message):
    """End the script at once: `message` on stderr, exit status 1.

    signalrcore's socket threads are not daemons and pysignalr's tasks may be blocked;
    neither is waited for.
    """
    script = os.path.basename(sys.argv[0])
    sys.stderr.write(f"{script}: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def succeed(result):
    """End the script at once: `result` as one line of JSON on stdout, exit status 0."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)
