"""The harness's exit codes and the errors that map to them (one line each, no traceback)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_THRESHOLD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INCONCLUSIVE = 4  # the host was too busy for a verdict (harness.verdict.host); never a pass or a fail
EXIT_REGRESSION = 5  # a soak's figure outside its tolerance against the previous nights (harness.soak)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class HarnessError(Exception):
    exit_code = EXIT_ENVIRONMENT


class BadInput(HarnessError):
    """A profile, option or frame the user gave is invalid; the message names the field."""

    exit_code = EXIT_BAD_INPUT


class BackendError(HarnessError):
    """The target or its environment failed (could not start, died, not ready)."""

    exit_code = EXIT_ENVIRONMENT
