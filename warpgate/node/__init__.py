"""The Node: identity, servers, connections and the traversal engine."""
