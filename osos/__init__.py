"""OSOS: open-source metering head-end."""
__version__ = "0.1.0"
