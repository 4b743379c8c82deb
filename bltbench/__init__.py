"""bltbench: what byte-level generation with the Byte Latent Transformer really costs."""

__version__ = "0.1.0"
