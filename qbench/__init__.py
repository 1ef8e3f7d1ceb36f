"""qbench: reproduce low-bit and binary neural-network training papers from one command line."""
__version__ = "0.1.0"
