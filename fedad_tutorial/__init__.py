"""fedad_tutorial: federated anomaly detection with PyTorch autoencoders, the companion package.

The notebooks, the ``fedad`` command line, the Flower apps and the benchmarks all import from here.
"""

__version__ = "0.1.0"
