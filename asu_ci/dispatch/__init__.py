"""Dispatching accepted requests to builders: a local pool or GitHub Actions."""
