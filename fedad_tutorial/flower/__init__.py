"""The course's detector trained by Flower: a ``ServerApp`` and a ``ClientApp`` on the Message API.

- :mod:`~fedad_tutorial.flower.client_app`: a node's side (statistics, local training, histograms,
  evaluation on its held-out rows), calling the package's training, scaling and metric code;
- :mod:`~fedad_tutorial.flower.server_app`: FedAvg over the nodes with the package's global scaler,
  federated threshold and run folder;
- :mod:`~fedad_tutorial.flower.deploy`: the SuperLink / SuperNode processes behind ``fedad server``
  and ``fedad client``;
- :mod:`~fedad_tutorial.flower.certs`: a CA and a server certificate for the names clients use
  (``fedad certs``), and the checks of the files a server and a client are given;
- :mod:`~fedad_tutorial.flower.keys` and :mod:`~fedad_tutorial.flower.files`: node keys (``fedad
  keygen``), and reading and writing a deployment's files safely.

Flower is imported only by this subpackage, so the rest of the package works without it.
"""
