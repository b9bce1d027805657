"""The gateway client every fake speaks with: one session over a plain socket driven by websockets' Sans-I/O
protocol (`plain_socket`, one descriptor per connection and nothing running between calls), opened as
OpenClaw's reference client opens it (`session`), and the connect request of each client shape
(`connect_shape`). The accounts, the agents, the operator and the health probe all use it, so they fail in the
same words."""
