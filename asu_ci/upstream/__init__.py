"""Reading the upstream download server: files, its metadata and its package indexes."""
