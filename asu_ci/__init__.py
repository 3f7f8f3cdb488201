"""asu-ci: Attended SysUpgrade for OpenWrt as a CI-driven static build farm."""

__version__ = "0.1.0"
