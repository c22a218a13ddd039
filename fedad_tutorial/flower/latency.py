"""Flower's waits, shortened: the one place where ``fedad`` changes Flower's timing.

A message of a deployment goes ServerApp -> SuperLink -> SuperNode -> ClientApp and its reply
back, and Flower 1.41 waits at several of those hops with sleeps sized for large federations:

- a SuperNode sleeps 3 s after every pull that found no message, and 0.5 s between checks for
  the ClientApp's reply (:func:`shorten_supernode_sleeps` divides both by :data:`SUPERNODE_FACTOR`);
- a message is announced before its contents are uploaded (its weights, one object per array, come
  in separate requests), so whoever pulls it soon after, the SuperNode from the SuperLink, the
  ClientApp from the SuperNode, the ServerApp its replies, often finds a part missing and retries
  after a back-off that starts at 1 s and doubles (:func:`shorten_pull_backoff` starts it at
  :data:`PULL_BACKOFF` instead; the doubling, the cap and the limit on tries are Flower's, and our ClientApp
  worker gives up after :data:`PULL_MAX_TIME` s, where Flower waits two hours);
- the ServerApp's ``Grid.send_and_receive`` sleeps 3 s between polls for replies (our
  :class:`~fedad_tutorial.flower.runtime.FastGrid` polls after
  :data:`~fedad_tutorial.flower.runtime.POLL` s, less often while the nodes train);
- an app process learns of a node's message only by polling the SuperNode; instead, our SuperNode
  writes a byte to a pipe each time it has stored a message (:func:`notify_stored_messages`), and
  ``fedad client`` waits on that pipe (polling only once in a while, as a fallback), so neither
  process spends CPU asking while the other nodes train.

None of this changes what is sent or computed, only how soon a waiting process looks again.
These patches touch only the processes ``fedad`` itself runs (its server and client commands and
the SuperNode it starts); the SuperLink is Flower's unchanged.
"""

from __future__ import annotations

import os
import time
import types

#: The environment variable that gives our SuperNode the pipe (a file descriptor) to notify.
NOTIFY_FD = "FEDAD_NOTIFY_FD"

#: The SuperNode's sleeps are divided by this (3 s -> 0.3 s between empty pulls; 0.5 s -> 0.05 s).
SUPERNODE_FACTOR = 10.0
#: The first back-off (seconds) when a pulled message's contents are not all uploaded yet.
PULL_BACKOFF = 0.05
#: Seconds our ClientApp worker waits for a message's contents to reach its SuperNode. Flower waits two hours; a
#: server killed between handing out a task and sending its contents would hold the node that long,
#: where it should notice the loss and join the restarted server (``fedad server --resume``).
PULL_MAX_TIME = 30.0


def shorten_pull_backoff(max_time: float | None = None) -> None:
    """Start Flower's object-pull back-off at :data:`PULL_BACKOFF` s in this process; with ``max_time``, give up
    after that many seconds (Flower's ``ObjectPullError``) instead of Flower's two hours."""
    from flwr.supercore.inflatable import inflatable_utils

    for function in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        function.__kwdefaults__["initial_backoff"] = PULL_BACKOFF
        if max_time is not None:
            function.__kwdefaults__["max_time"] = max_time


def shorten_supernode_sleeps() -> None:
    """Divide the sleeps of the SuperNode's pull and push loops by :data:`SUPERNODE_FACTOR`."""
    from flwr.supernode import start_client_internal

    start_client_internal.time = types.SimpleNamespace(
        **{**vars(time), "sleep": lambda seconds: time.sleep(seconds / SUPERNODE_FACTOR)})


def notify_stored_messages() -> None:
    """Write a byte to the pipe named by ``$FEDAD_NOTIFY_FD`` whenever the SuperNode has stored a
    message from the SuperLink (its task can then be taken); nothing without that variable."""
    fd = os.environ.get(NOTIFY_FD)
    if not fd:
        return
    from flwr.supernode import start_client_internal

    pull = start_client_internal._pull_and_store_message  # noqa: SLF001

    def pull_and_notify(*args, **kwargs):
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            try:
                os.write(int(fd), b"m")
            except OSError:  # the client wrapper is gone; the SuperNode dies with it
                pass
        return run_id

    start_client_internal._pull_and_store_message = pull_and_notify  # noqa: SLF001
