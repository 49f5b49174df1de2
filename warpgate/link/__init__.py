"""Links: authenticated, encrypted connections between two nodes over TCP or UDP."""
