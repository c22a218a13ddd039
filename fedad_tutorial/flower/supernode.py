"""``python -m fedad_tutorial.flower.supernode [flower-supernode flags]``: Flower's SuperNode, waiting less.

Flower 1.41's SuperNode sleeps 3 s after every empty pull from the SuperLink, 0.5 s between
checks for a reply, and at least 1 s before pulling again a message whose contents are not all
uploaded yet; here the same SuperNode runs with those waits shortened
(:mod:`~fedad_tutorial.flower.latency`), and it tells ``fedad client`` through a pipe when a
message has arrived. It also sends its heartbeat every :data:`HEARTBEAT` s (Flower's shortest allowed
interval) instead of every 30 s: the SuperLink counts a node as online until two heartbeats are missed, and
a client killed and started again under the same key cannot join before that, so it rejoins sooner.
And once its node is in, a SuperLink that no longer knows it (the server restarted, e.g. ``fedad server
--resume``) ends it at once with exit status :data:`FORGOTTEN` (:func:`exit_when_forgotten`), where Flower's
would stop as if interrupted, or go on without a heartbeat: ``fedad client`` then joins the new server.
Everything else is Flower's ``flower-supernode``, flags included.
"""

from __future__ import annotations

import os
import sys

from flwr.common.constant import HEARTBEAT_MIN_INTERVAL

#: Seconds between a SuperNode's heartbeats.
HEARTBEAT = float(HEARTBEAT_MIN_INTERVAL)
#: Our SuperNode's exit status when the SuperLink no longer knows its node (see :func:`exit_when_forgotten`).
FORGOTTEN = 75
#: The line it logs then.
FORGOTTEN_LINE = "fedad: the SuperLink no longer knows this node (the server restarted); this SuperNode stops"
#: The Fleet API calls made before a node is in: a refusal there is a key the server does not list, not a restart.
_JOINING = ("register", "activate")


def exit_when_forgotten() -> None:
    """End this SuperNode (:data:`FORGOTTEN`) as soon as the SuperLink answers a call of its admitted node
    as one it does not know: ``401`` under node authentication, an unsuccessful heartbeat without it.

    Flower's SuperNode signals itself to stop on the first, after a grace sleep, and on the second only
    ends its heartbeat thread and goes on pulling for a node that no longer exists; either way its
    ``fedad client`` could not tell a restarted server from a failure."""
    import httpx
    from flwr.supernode.fleet_http_client import FleetHttpClient

    send = FleetHttpClient._unary_unary  # noqa: SLF001

    def forgotten() -> None:
        print(FORGOTTEN_LINE, file=sys.stderr, flush=True)
        os._exit(FORGOTTEN)

    def send_or_stop(self, *, path: str, **kwargs):
        try:
            response = send(self, path=path, **kwargs)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == httpx.codes.UNAUTHORIZED and not any(w in path for w in _JOINING):
                forgotten()
            raise
        if path.endswith("send-node-heartbeat") and not response.success:
            forgotten()
        return response

    FleetHttpClient._unary_unary = send_or_stop  # noqa: SLF001


def main() -> None:
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from fedad_tutorial.flower.latency import notify_stored_messages, shorten_pull_backoff, shorten_supernode_sleeps

    shorten_supernode_sleeps()
    shorten_pull_backoff()
    notify_stored_messages()
    exit_when_forgotten()
    fleet_http_connection.HEARTBEAT_DEFAULT_INTERVAL = HEARTBEAT  # what the SuperLink is told
    heartbeat.HEARTBEAT_DEFAULT_INTERVAL = HEARTBEAT  # how often they are sent (Flower's share of it)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
