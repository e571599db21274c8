"""Sessions and venues over real sockets: FIX 4.4 and OUCH 4.2 order entry, the ITCH feed,
and the venue simulator. Knows nothing of strategies or stages."""
