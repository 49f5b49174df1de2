"""Who a node is: its keypair (kept in a keystore) and its machine id."""
