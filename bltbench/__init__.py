"""bltbench: what byte-level generation with the Byte Latent Transformer really costs.

`load_model`, `generate`, `compare` and `run_suite` are the Python API (`bltbench.api`); every user
error they raise is a `BltbenchError`.
"""

__version__ = "0.1.0"
__all__ = ["BltbenchError", "compare", "generate", "load_model", "run_suite", "__version__"]

from bltbench.errors import BltbenchError


def __getattr__(name: str):
    """The API's functions, imported on first use: `import bltbench` stays light (no torch)."""
    if name in ("compare", "generate", "load_model", "run_suite"):
        from bltbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bltbench' has no attribute {name!r}")
