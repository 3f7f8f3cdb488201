"""Publishing build results: the local static store or GitHub Releases."""
