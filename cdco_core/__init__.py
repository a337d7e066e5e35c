"""cdco: cross-domain contrastive optimisation of adapters for small language models.

The method library. It imports without Prefect or MLflow; heavy packages (torch, transformers) are
imported inside the modules that need them, so `cdco --help` stays fast.
"""

__version__ = "0.1.0"
