"""Hole punching, the asynchronous side: signalling sessions, UDP probing (and birthday
probing for symmetric NATs), TCP simultaneous open.  The wire formats are sans-IO in
:mod:`warpgate.sansio.punch_messages` and :mod:`warpgate.sansio.punch_probe`; the choice
of strategy is :mod:`warpgate.sansio.punch_plan`.  The traversal methods
``udp_punch`` and ``tcp_punch`` (in ``warpgate_plugins``) are thin shells around this
package."""
