"""A gateway developer's own storm tests, as they would write them (run: `pytest examples/pytest`).

Installing the harness is enough: its pytest plugin brings the `harness_run` fixture and the
`gateway_profile` marker. Against your own gateway on loopback: `pytest examples/pytest --gateway-url
ws://127.0.0.1:18789/ --gateway-token TOKEN --harness-time-scale 1`.
"""

import pytest

from harness.testing import assert_no_storm, assert_one_prompt_per_intent

pytestmark = pytest.mark.gateway_profile("profiles/eleven-matrix-accounts.yaml")


def test_eleven_accounts_behind_the_start_coordinator_do_not_storm(harness_run):
    assert_no_storm(harness_run(arm="coordinator"))


@pytest.mark.xfail(reason="openclaw#70641: as shipped, eleven accounts on a slow host storm for good", strict=True)
def test_eleven_accounts_as_shipped_do_not_storm(harness_run, request):
    if request.config.getoption("--gateway-url"):
        pytest.xfail("the storm needs the slow stub; a gateway of your own may be fast enough not to storm")
    assert_no_storm(harness_run(arm="shipped"))


@pytest.mark.gateway_profile("profiles/failover-approvals.yaml", arm="stable-id")
def test_a_failed_over_run_asks_for_approval_once(harness_run):
    assert_one_prompt_per_intent(harness_run())
