"""The command line's defaults: the reference configuration plus what suits real, unlabelled data.

``fedad run``, ``simulate`` and ``server`` (and a plain ``flwr run`` of our apps) start from
:data:`RECOMMENDED`; only the number of rounds differs per command. The course's chapters start
from the plain :class:`~fedad_tutorial.config.FederatedConfig`, so that each lesson adds one idea.

- ``threshold="local"``: each client flags against its own score distribution;
- ``engine="vectorized"``: the same numbers as the loop engine, faster;
- ``trim=0.1``: each step leaves the batch's highest-loss 10 % out, so the few anomalies hidden in
  unlabelled training rows are not learned (chapter 13 measures what this buys on real data).
"""

from __future__ import annotations

from dataclasses import replace

from fedad_tutorial.config import FederatedConfig

RECOMMENDED = FederatedConfig(threshold="local", engine="vectorized", trim=0.1)
#: What ``fedad simulate`` and ``fedad server`` train: the recommended configuration with their 10 rounds.
SIMULATE = replace(RECOMMENDED, rounds=10)
