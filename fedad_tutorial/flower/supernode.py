"""``python -m fedad_tutorial.flower.supernode [flower-supernode flags]``: Flower's SuperNode, waiting less.

Flower 1.41's SuperNode sleeps 3 s after every empty pull from the SuperLink, 0.5 s between
checks for a reply, and at least 1 s before pulling again a message whose contents are not all
uploaded yet; here the same SuperNode runs with those waits shortened
(:mod:`~fedad_tutorial.flower.latency`), and it tells ``fedad client`` through a pipe when a
message has arrived. It also sends its heartbeat every :data:`HEARTBEAT` s (Flower's shortest allowed
interval) instead of every 30 s: the SuperLink counts a node as online until two heartbeats are missed, and
a client killed and started again under the same key cannot join before that, so it rejoins sooner.
Everything else is Flower's ``flower-supernode``, flags included.
"""

from __future__ import annotations

import sys

from flwr.common.constant import HEARTBEAT_MIN_INTERVAL

#: Seconds between a SuperNode's heartbeats.
HEARTBEAT = float(HEARTBEAT_MIN_INTERVAL)


def main() -> None:
    from flwr.supercore import heartbeat
    from flwr.supernode import fleet_http_connection
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from fedad_tutorial.flower.latency import notify_stored_messages, shorten_pull_backoff, shorten_supernode_sleeps

    shorten_supernode_sleeps()
    shorten_pull_backoff()
    notify_stored_messages()
    fleet_http_connection.HEARTBEAT_DEFAULT_INTERVAL = HEARTBEAT  # what the SuperLink is told
    heartbeat.HEARTBEAT_DEFAULT_INTERVAL = HEARTBEAT  # how often they are sent (Flower's share of it)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
