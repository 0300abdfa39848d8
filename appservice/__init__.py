"""The UnityPlan appservice process: config, composition root, Matrix dispatch, HTTP server, CLI."""

__version__ = "0.1.0"
