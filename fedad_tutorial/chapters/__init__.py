"""The course's chapters beyond the core: one idea each, built on the core and never imported by it.

- :mod:`~fedad_tutorial.chapters.forest`: isolation forests, centralized, per client and federated by pooled trees (07);
- :mod:`~fedad_tutorial.chapters.timeseries`: metric streams, sliding windows, event-level evaluation (08);
- :mod:`~fedad_tutorial.chapters.drift`: concept drift, drift tests on score histograms, re-calibration (09);
- :mod:`~fedad_tutorial.chapters.privacy`: client-level DP-FedAvg and its accountant (10);
- :mod:`~fedad_tutorial.chapters.robust`: poisoning attacks and robust aggregation rules (11);
- :mod:`~fedad_tutorial.chapters.datasets`, :mod:`~fedad_tutorial.chapters.budget`: the WDBC hospitals and the
  training budget (13);
- :mod:`~fedad_tutorial.chapters.oneclass`: Deep SVDD's collapse and the detector comparison (14);
- :mod:`~fedad_tutorial.chapters.intrusion`: the connection-record federations (15);
- :mod:`~fedad_tutorial.chapters.baselines`: PCA, norm and isolation-forest baselines with the detectors' interface.

The command line needs none of them: ``tests/test_layers.py`` checks that the core never imports this package.
"""
