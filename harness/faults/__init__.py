"""Fault injection: the Toxiproxy client, the embedded Toxiproxy-compatible proxy, and the fault timeline."""
