"""Socket-level helpers: interface discovery and the node's servers."""
