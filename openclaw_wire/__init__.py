"""OpenClaw's wire facts, shared by the gateway stub and the harness, written once.

`constants`: timeouts, intervals and limits with the OpenClaw source file each mirrors; `device_auth`: the
Ed25519 device proof both sides sign and verify; `log_records`: the gateway log's record shape, the words its
lines start with, and the reader that counts them. Nothing here imports the stub or the harness, and nothing
here does I/O beyond reading a log file it is handed.
"""
