"""Start policies and retry schedules as pure objects (no sleeping, no sockets, no global clock)."""
