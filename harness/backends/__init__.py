"""Where the target gateway runs: embedded child processes today; Docker and real OpenClaw later."""
