"""The worker rides out a broker restart: a Redis this test started is killed and started again
(empty: no persistence) in the middle of a rollout; the same worker process finishes it.

Messages queued in the killed Redis are gone with it; beat's resume of stale host runs and its
kick of unfinished rollouts re-create them (docs/operations.md, "Broker outages").
"""

import pytest
from django.db import connection

from changes import approvals, services
from changes.models import Rollout
from simfleet import SimFleet
from tests.conftest import BeatProcess, WorkerProcess, ensure_role_groups, register_sim_hosts, require_or_skip
from tests.redis_server import RedisServer, publishing_to, redis_server_binary

from .conftest import change_data, wait_for

pytestmark = pytest.mark.slow

ENO49 = "0000:04:00.0"
HOSTS = 6


@pytest.fixture
def redis(tmp_path):
    require_or_skip(redis_server_binary() is not None, "redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis.log").start()
    with publishing_to(server.url):
        yield server
    server.stop()


@pytest.fixture
def fleet(tmp_path):
    sim = SimFleet(
        tmp_path / "simfleet",
        hosts=[{"profile": "dl360g9", "name": f"br{i:02d}"} for i in range(HOSTS)],
        base_port=0,
        vf_delay=0.4,  # each VF takes a while: the rollout is still running when Redis goes
    ).start()
    yield sim
    sim.stop()


@pytest.fixture
def processes(transactional_db, redis, tmp_path):
    ensure_role_groups()
    env = {"HOSTRUN_RESUME_INTERVAL_SECONDS": "1"}
    worker = WorkerProcess(connection.settings_dict["NAME"], tmp_path / "worker.log", broker_url=redis.url, env=env)
    beat = BeatProcess(tmp_path / "beat.log", broker_url=redis.url, env=env)
    worker.start()
    beat.start()
    yield worker, beat
    beat.stop()
    worker.stop()


def _approved(hosts, operator, approver):
    change = services.create_change(
        change_data([h.pk for h in hosts], parallelism=2, canary_count=0, max_failures=1), operator
    )
    services.submit_change(change.pk, operator)
    approvals.approve(change.pk, approver, comment="ok", approval_hash=approvals.current_approval_hash(change.pk))
    return change


def test_redis_restart_mid_rollout_is_ridden_out_by_the_same_worker(
    processes, redis, fleet, operator, approver, tmp_path
):
    worker, _beat = processes
    pid = worker.pid
    sims = [fleet.host(f"br{i:02d}") for i in range(HOSTS)]
    hosts = register_sim_hosts(fleet, sims)
    change = _approved(hosts, operator, approver)

    def some_host_done_others_not():
        rollout = Rollout.objects.filter(change=change).first()
        if rollout is None:
            return False
        states = list(rollout.host_runs.values_list("state", flat=True))
        return "succeeded" in states and any(s in ("pending", "running") for s in states)

    wait_for(some_host_done_others_not, timeout=120, what="the rollout to be half way")
    redis.restart(down_seconds=3)

    def finished():
        rollout = Rollout.objects.filter(change=change).first()
        return rollout if rollout.is_finished else None

    rollout = wait_for(finished, timeout=240, what="the rollout to finish after the Redis restart")
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert worker.proc.poll() is None and worker.pid == pid, log[-3000:]
    assert "Unrecoverable error" not in log
    assert "Connection to broker lost" in log  # the restart did reach the worker
    messages = list(rollout.host_runs.values_list("host__name", "state", "message"))
    assert rollout.state == "succeeded", messages
    assert [s.true_state()["numvfs"][ENO49] for s in sims] == [4] * HOSTS
