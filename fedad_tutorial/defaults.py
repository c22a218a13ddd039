"""Names for the command line's configurations, so that code can say which defaults it means.

``FederatedConfig()`` itself is what ``fedad run`` trains (the defaults are declared once, in
:mod:`fedad_tutorial.params`: local thresholds, the vectorized engine, trimmed training);
:data:`RECOMMENDED` is that configuration under a name, and :data:`SIMULATE` the same with the
10 rounds of ``fedad simulate`` and ``fedad server`` (and of a plain ``flwr run`` of our apps).
"""

from __future__ import annotations

from dataclasses import replace

from fedad_tutorial.config import FederatedConfig

#: The command line's configuration: ``FederatedConfig()``.
RECOMMENDED = FederatedConfig()
#: What ``fedad simulate`` and ``fedad server`` train: the recommended configuration with their 10 rounds.
SIMULATE = replace(RECOMMENDED, rounds=10)
