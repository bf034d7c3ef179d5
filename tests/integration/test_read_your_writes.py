"""`wait_until_projected`: the bounded wait a read does for its organisation's own writes."""

from __future__ import annotations

import time

from projections.queries import wait_until_projected
from tests.integration.helpers import create, new_org_id


def test_the_wait_gives_up_within_its_bound_when_nothing_projects(system, service, org_id):
    create(service, org_id)

    started = time.monotonic()
    projected = wait_until_projected(system.engine, org_id, timeout=0.3)
    waited = time.monotonic() - started

    assert projected is False
    assert 0.3 <= waited < 2.0


def test_the_wait_succeeds_once_the_worker_applied_the_writes(system, service, org_id):
    written = create(service, org_id)
    assert not wait_until_projected(system.engine, org_id, timeout=0)

    system.start_relay()
    system.start_worker()

    assert wait_until_projected(system.engine, org_id, timeout=10)
    assert wait_until_projected(system.engine, org_id, timeout=0, stream_id=written.stream_id)


def test_the_wait_ignores_other_organisations_pending_writes(system, service, org_id):
    create(service, new_org_id())

    assert wait_until_projected(system.engine, org_id, timeout=0)


def test_the_wait_for_one_stream_ignores_the_organisations_other_streams(system, service, org_id):
    projected_stream = create(service, org_id)
    create(service, org_id)
    with system.engine.begin() as conn:
        conn.exec_driver_sql(
            f"DELETE FROM projection_pending WHERE stream_id = '{projected_stream.stream_id}'"
        )

    assert wait_until_projected(system.engine, org_id, timeout=0, stream_id=projected_stream.stream_id)
    assert not wait_until_projected(system.engine, org_id, timeout=0)
