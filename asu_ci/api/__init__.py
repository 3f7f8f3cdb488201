"""The request endpoint (FastAPI)."""
