"""Chief and worker on a real TF cluster: two in-process ``tf.distribute.Server``s on localhost.

The variables live on the chief's task. The worker's ``WorkerSessionCreator``
opens a session on its own server and asks the ready op, run on the cluster,
whether the chief has initialized them, as TF's does; its wait between
tries is an injected ``sleep`` that lets the chief start only once the worker
has been found waiting, so nothing depends on timing.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

tf = pytest.importorskip("tensorflow")
train = pytest.importorskip("looprt.backends.tensorflow")

pytestmark = pytest.mark.tensorflow

TIMEOUT = 60.0  # a safety net against a hang, never a timing assumption


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    """One chief and one worker server (TF servers cannot be stopped; one cluster serves the module)."""
    spec = tf.train.ClusterSpec({"chief": [f"localhost:{_free_port()}"], "worker": [f"localhost:{_free_port()}"]})
    return {
        "chief": tf.distribute.Server(spec, job_name="chief", task_index=0),
        "worker": tf.distribute.Server(spec, job_name="worker", task_index=0),
    }


def build(tag: str) -> tuple[Any, Any, Any]:
    """The model, with its variables on the chief's task; ``tag`` keeps tests' variables apart."""
    with tf.device("/job:chief/task:0"):
        global_step = tf.compat.v1.train.get_or_create_global_step()
        total = tf.compat.v1.Variable(0.0, name=f"total_{tag}")
    step = tf.group(tf.compat.v1.assign_add(total, 1.0), tf.compat.v1.assign_add(global_step, 1))
    return global_step, total, step


def test_worker_waits_for_the_chief_then_shares_its_variables(cluster: dict[str, Any]) -> None:
    worker_waiting, chief_done = threading.Event(), threading.Event()
    waits: list[float] = []
    seen: dict[str, Any] = {}

    def sleep(secs: float) -> None:
        waits.append(secs)
        worker_waiting.set()
        chief_done.wait(TIMEOUT)

    def worker() -> None:
        with tf.Graph().as_default():
            global_step, total, step = build("wait")
            creator = train.WorkerSessionCreator(
                master=cluster["worker"].target, recovery_wait_secs=5, sleep=sleep
            )
            with train.MonitoredSession(creator) as sess:
                seen["at_start"] = sess.run([global_step, total])
                sess.run(step)

    thread = threading.Thread(target=worker)
    thread.start()
    assert worker_waiting.wait(TIMEOUT), "the worker did not wait for the chief"
    with tf.Graph().as_default():
        global_step, total, step = build("wait")
        with train.MonitoredTrainingSession(master=cluster["chief"].target, is_chief=True) as sess:
            sess.run(step)
            sess.run(step)
            chief_done.set()
            thread.join(TIMEOUT)
            assert not thread.is_alive()
            assert sess.run([global_step, total]) == [3, 3.0]
    assert waits == [5]
    assert seen["at_start"] == [2, 2.0]


def test_worker_of_monitored_training_session_joins_a_running_chief(cluster: dict[str, Any]) -> None:
    with tf.Graph().as_default():
        _, total, step = build("join")
        with train.MonitoredTrainingSession(master=cluster["chief"].target, is_chief=True) as chief:
            chief.run(step)
            with tf.Graph().as_default():
                _, worker_total, worker_step = build("join")
                with train.MonitoredTrainingSession(master=cluster["worker"].target, is_chief=False) as worker:
                    worker.run(worker_step)
                    assert worker.run(worker_total) == 2.0
            assert chief.run(total) == 2.0


def _deadline(namespace: Any, master: str) -> tuple[str, str]:
    with tf.Graph().as_default():
        build("never")  # no chief ever initializes these
        creator = namespace.WorkerSessionCreator(master=master, max_wait_secs=0)
        try:
            namespace.MonitoredSession(creator)
        except Exception as e:
            return type(e).__name__, str(e)
    return "no error", ""


def test_worker_gives_up_as_tfs_does(cluster: dict[str, Any]) -> None:
    expected = _deadline(tf.compat.v1.train, cluster["worker"].target)
    assert expected == ("DeadlineExceededError", "Session was not ready after waiting 0 secs.")
    assert _deadline(train, cluster["worker"].target) == expected
