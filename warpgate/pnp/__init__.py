"""PNP (Peer Name Protocol): the name server, its storage and the client.

The packet codec is :mod:`warpgate.sansio.pnp`.
"""
