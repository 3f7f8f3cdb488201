"""The static index: rendering it from upstream and reading it back."""
