"""Fake accounts: clients that connect the way OpenClaw's native-approvals handlers do."""
