"""Test stand-ins that speak the real OpenWrt formats (never part of the product)."""
