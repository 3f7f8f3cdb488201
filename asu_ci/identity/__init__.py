"""Request identity: the request model, its normalisation and its hash."""
