"""The gateway client every fake speaks with: one session over `websockets.sync`, opened as OpenClaw's reference
client opens it (`session`), the connect request of each client shape (`connect_shape`), and a close that
cannot hang (`safe_close`). The accounts, the agents, the operator and the health probe all use it, so they
fail in the same words."""
