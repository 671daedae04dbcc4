"""Planning and orchestration of IsoFLOP scaling sweeps for AR and discrete diffusion LMs."""

__version__ = "0.1.0"
