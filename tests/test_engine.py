"""The engine end to end: real agent processes over real SQLite files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from jobmanager import JobManager, Timeout
from jobmanager.engine.queue import Queue
from jobmanager.store import open_store

from .conftest import HEARTBEAT, wait_for


def task_states(jm: JobManager, job_id: int) -> list[str]:
    return [t.state for t in jm.job(job_id).tasks]


def test_job_runs_to_completion_with_logs_and_progress(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 3, "seconds": 0.2, "steps": 4}, name="smoke")
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed" and job.progress == 1.0
    assert all(t.state == "succeeded" and t.agent == "a1" and t.attempts == 1 for t in job.tasks)
    assert all(t.progress_done == 4 and t.progress_total == 4 for t in job.tasks)
    log = jm.log(job_id)
    assert [f"task {n}: sleeping" in log for n in (1, 2, 3)] == [True] * 3
    assert log.index(f"job {job_id} task 1") < log.index(f"job {job_id} task 3")
    assert "task 2: sleeping" in jm.log(job_id, task=2) and "task 1:" not in jm.log(job_id, task=2)
    events = jm.events(job_id)
    assert list(events[events.kind == "job"].to_state) == ["queued", "running", "completed"]


def test_failed_task_then_retry_succeeds(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 3, "fail_tasks": [2], "fail_attempts": 1})
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed_with_errors"
    failed = job.tasks[1]
    assert failed.state == "failed" and "failed on purpose" in failed.error and "Traceback" in failed.traceback
    assert "failed on purpose" in jm.log(job_id, task=2)
    jm.retry(job_id)
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed" and job.tasks[1].attempts == 2
    assert [t.attempts for t in (job.tasks[0], job.tasks[2])] == [1, 1]  # only the failed one re-ran


def test_automatic_retries(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 1, "fail_tasks": [1], "fail_attempts": 2}, retries=2)
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed" and job.tasks[0].attempts == 3
    states = list(jm.events(job_id).to_state)
    assert states.count("retrying") == 2


def test_single_task_retry(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 2, "fail_tasks": [1, 2], "fail_attempts": 1})
    assert jm.wait(job_id, timeout=20).state == "failed"
    jm.retry(job_id, task=2)
    job = jm.wait(job_id, timeout=20)
    assert [t.state for t in job.tasks] == ["failed", "succeeded"] and job.state == "completed_with_errors"


def test_pause_and_resume_with_a_running_agent(jm: JobManager, start_agent) -> None:
    start_agent("a1", 1)
    job_id = jm.submit("sleep", {"tasks": 4, "seconds": 0.4})
    wait_for(lambda: "running" in task_states(jm, job_id), what="first task running")
    jm.pause(job_id)
    time.sleep(1.2)  # the running task finishes; no new one starts
    states = task_states(jm, job_id)
    assert jm.job(job_id).state == "paused"
    assert states.count("queued") >= 2 and "running" not in states
    jm.resume(job_id)
    assert jm.wait(job_id, timeout=20).state == "completed"


def test_cancel_stops_running_tasks_and_queued_never_run(jm: JobManager, start_agent) -> None:
    start_agent("a1", 1)
    job_id = jm.submit("sleep", {"tasks": 3, "seconds": 30, "steps": 300})
    wait_for(lambda: "running" in task_states(jm, job_id), what="task running")
    jm.cancel(job_id)
    wait_for(lambda: task_states(jm, job_id) == ["cancelled"] * 3, timeout=10, what="all cancelled")
    job = jm.job(job_id)
    assert job.state == "cancelled" and [t.attempts for t in job.tasks] == [1, 0, 0]


def test_priority_orders_waiting_work(jm: JobManager, start_agent) -> None:
    low = jm.submit("sleep", {"tasks": 3}, name="low", priority=0)
    high = jm.submit("sleep", {"tasks": 3}, name="high", priority=5)
    raised = jm.submit("sleep", {"tasks": 3}, name="raised", priority=0)
    jm.set_priority(raised, 10)
    start_agent("a1", 1)
    for job_id in (low, high, raised):
        jm.wait(job_id, timeout=20)
    first_start = {j: min(t.started_at for t in jm.job(j).tasks) for j in (low, high, raised)}
    assert first_start[raised] < first_start[high] < first_start[low]


def test_agent_killed_mid_task_loses_nothing(jm: JobManager, start_agent) -> None:
    victim = start_agent("victim", 2)
    job_id = jm.submit("sleep", {"tasks": 6, "seconds": 1.0, "steps": 10}, retries=1)
    wait_for(lambda: task_states(jm, job_id).count("running") == 2, what="two tasks running on victim")
    victim.kill()
    start_agent("rescuer", 2)
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed" and job.tasks_succeeded == 6
    agents = jm.agents().set_index("name")
    assert agents.loc["victim", "status"] == "lost"
    rescued = [t for t in job.tasks if t.losses == 1]  # run again without spending an attempt
    assert len(rescued) == 2 and all(t.agent == "rescuer" and t.attempts == 1 for t in rescued)
    events = jm.events(job_id)
    assert (events.message.fillna("").str.contains("agent victim lost")).sum() == 2


def test_restarted_agent_recovers_its_own_previous_tasks(jm: JobManager, start_agent) -> None:
    first = start_agent("solo", 1)
    job_id = jm.submit("sleep", {"tasks": 1, "seconds": 1.0}, retries=1)
    wait_for(lambda: task_states(jm, job_id) == ["running"], what="task running")
    first.kill()
    start_agent("solo", 1)  # same name, same host: the dead pid's work is recovered at start-up
    job = jm.wait(job_id, timeout=30)
    assert job.state == "completed" and (job.tasks[0].attempts, job.tasks[0].losses) == (1, 1)


def test_lost_queue_write_is_swept_at_start_up(home: Path, jm: JobManager, start_agent) -> None:
    # A crash between the store commit and the enqueue: the job exists, the queue never heard of it.
    store = open_store(jm.home)  # whichever backend the home names (SQLite, or PostgreSQL on pg-redis)
    from jobmanager.models import NewTask

    job_id, _ = store.create_job(
        type="sleep", name="orphan", params={"tasks": 2}, owner="t", case=None, priority=0, retries=0,
        has_finish=False, tasks=[NewTask("a", {"n": 1}), NewTask("b", {"n": 2})], actor="t",
    )
    assert Queue(jm.home).size() == 0
    start_agent("a1")
    assert jm.wait(job_id, timeout=20).state == "completed"


def test_stale_and_duplicate_messages_are_dropped(jm: JobManager, start_agent) -> None:
    job_id = jm.submit("sleep", {"tasks": 1})
    jm.cancel(job_id)
    task = jm.job(job_id).tasks[0]
    from jobmanager.models import Dispatch

    jm.queue.send([Dispatch(task.id, task.dispatch), Dispatch(task.id, task.dispatch)])
    start_agent("a1")
    wait_for(lambda: jm.queue.size() == 0, what="queue drained")
    job = jm.job(job_id)
    assert job.state == "cancelled" and job.tasks[0].attempts == 0 and job.tasks[0].state == "cancelled"


def test_messages_name_their_job_and_messages_without_it_still_run(home: Path, jm: JobManager, start_agent) -> None:
    """A run message carries its task's job in its Huey id (``j<job>.<uuid>``), a hint the claim checks; its
    arguments stay (task id, dispatch), so a message an earlier version wrote (a plain uuid id, no hint) runs
    too, and one with a wrong hint runs its own task, in its own job."""
    import dataclasses

    from jobmanager.engine.queue import job_hint
    from jobmanager.models import NewTask

    store = open_store(jm.home)
    jobs = [store.create_job(type="sleep", name=f"n{i}", params={"tasks": 2}, owner="tester", case=None, priority=0,
                             retries=0, has_finish=False, tasks=[NewTask("a", {"n": 1}), NewTask("b", {"n": 2})],
                             actor="tester") for i in range(3)]
    (plain, plain_ds), (hinted, hinted_ds), (wrong, wrong_ds) = jobs
    jm.queue.send([dataclasses.replace(d, job_id=None) for d in plain_ds] + hinted_ds
                  + [dataclasses.replace(d, job_id=plain) for d in wrong_ds])
    runs, _ = jm.queue.pending()
    assert len(runs) == 6
    ids = [jm.queue.huey.deserialize_task(data).id for data in jm.queue.huey.storage.enqueued_items()]
    assert sorted(job_hint(i) or 0 for i in ids) == [0, 0, plain, plain, hinted, hinted]
    start_agent("a1")
    for job_id in (plain, hinted, wrong):
        job = jm.wait(job_id, timeout=30)
        assert job.state == "completed" and [t.attempts for t in job.tasks] == [1, 1]
        text = jm.log(job_id)
        assert "task 1: done" in text and "task 2: done" in text, text  # each task's log is in its own job's


def test_finishing_step_writes_artifacts(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("merge_text", {"parts": ["a", "b", "c"]})
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed"
    arts = jm.artifacts(job_id).set_index("name")
    assert set(arts.index) == {"part-a.txt", "part-b.txt", "part-c.txt", "merged.txt"}
    merged = jm.home.inside(arts.loc["merged.txt", "path"])
    assert merged.read_text() == "<a><b><c>"
    assert "merged 3 parts" in jm.log(job_id)


def test_failed_part_then_retry_rebuilds_merge(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("merge_text", {"parts": ["a", "b"], "fail_parts": ["b"], "fail_attempts": 1})
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed_with_errors"

    def merged() -> str:
        return jm.home.inside(jm.artifacts(job_id).set_index("name").loc["merged.txt", "path"]).read_text()
    assert merged() == "<a>"
    jm.retry(job_id)
    job = jm.wait(job_id, timeout=20)
    assert job.state == "completed" and merged() == "<a><b>"
    assert [t.attempts for t in job.tasks] == [1, 2]


def test_failing_finishing_step_fails_the_job(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("merge_text", {"parts": ["a"], "fail_finish": True})
    job = jm.wait(job_id, timeout=20)
    assert job.state == "failed" and "finishing step failed" in job.error
    assert "merge failed on purpose" in jm.log(job_id)


def test_finisher_killed_mid_step_is_resent(jm: JobManager, start_agent) -> None:
    victim = start_agent("victim", 1)
    victim.kill()
    # The store's view of a crash inside the finishing step: the dead agent holds the step.
    job_id = jm.submit("merge_text", {"parts": ["a"]})
    store = open_store(jm.home)
    task = jm.job(job_id).tasks[0]
    store.claim_task(task.id, task.dispatch, "victim")
    assert store.finish_task(task.id, "victim", "succeeded").finalize
    assert jm.job(job_id).finisher == "victim"
    start_agent("rescuer", 1)
    job = jm.wait(job_id, timeout=30)
    assert job.state == "completed" and job.finisher is None
    assert "finishing step resent" in " ".join(jm.events(job_id).message.dropna())


def test_graceful_stop_marks_offline_and_stop_request(jm: JobManager, start_agent) -> None:
    a = start_agent("a1")
    b = start_agent("a2")
    assert a.stop() == 0
    jm.stop_agent("a2")
    b.proc.wait(15)
    agents = jm.agents().set_index("name")
    assert list(agents.status) == ["offline", "offline"]


def test_agent_heartbeat_reports_stats(jm: JobManager, start_agent) -> None:
    start_agent("a1", 2)
    job_id = jm.submit("sleep", {"tasks": 2, "seconds": 2, "steps": 20})

    def busy() -> bool:
        row = jm.agents().set_index("name").loc["a1"]
        return row.status == "busy" and row.busy == 2
    wait_for(busy, timeout=5, what="agent busy with 2 tasks")
    jm.wait(job_id, timeout=20)
    time.sleep(HEARTBEAT * 2)
    row = jm.agents().set_index("name").loc["a1"]
    assert row.done == 2 and row.status == "idle" and row.rss_mb > 10 and row.host and row.pid


def test_wait_times_out(jm: JobManager) -> None:
    job_id = jm.submit("sleep", {"tasks": 1})
    with pytest.raises(Timeout, match="still queued"):
        jm.wait(job_id, timeout=0.2)


def test_two_agents_share_work(jm: JobManager, start_agent) -> None:
    start_agent("a1", 1)
    start_agent("a2", 1)
    job_id = jm.submit("sleep", {"tasks": 8, "seconds": 0.3})
    job = jm.wait(job_id, timeout=30)
    assert job.state == "completed" and {t.agent for t in job.tasks} == {"a1", "a2"}


# -- task logs: parts of one append-only file per worker thread (issue 18) ---------------------------------------
def test_task_logs_are_parts_of_one_file_per_worker_thread(jm: JobManager, start_agent) -> None:
    """No file per task or job: each worker thread appends every task it runs, of any job, to its own file,
    and each task's log (``jm.log(job, task)``, the CLI's ``logs --task``) is exactly its part of it."""
    from click.testing import CliRunner

    from jobmanager.cli.main import cli
    from jobmanager.engine.tasklogs import SLICE_FILE, index_file_name, parse_parts

    start_agent("a1", 2)
    job_id = jm.submit("sleep", {"tasks": 8, "seconds": 0.05})
    other = jm.submit("sleep", {"tasks": 8, "seconds": 0.05})
    job = jm.wait(job_id, timeout=30)
    assert job.state == "completed" and jm.wait(other, timeout=30).state == "completed"
    assert not jm.home.job_logs(job_id).exists()  # nothing created per job
    folder = jm.home.thread_logs
    files = sorted(p.name for p in folder.glob("*.log"))
    assert 1 <= len(files) <= 2 and all(SLICE_FILE.fullmatch(f) for f in files), files
    assert sorted(p.name for p in folder.glob("*.idx")) == [index_file_name(f) for f in files]
    assert all(len(parse_parts(t.log_slices)) == 1 for t in job.tasks), [t.log_slices for t in job.tasks]
    for n in range(1, 9):
        own = jm.log(job_id, task=n)
        assert own.startswith(f"--- job {job_id} task {n} ") and f"task {n}: done" in own
        assert sorted(set(re.findall(r"task (\d+): ", own))) == [str(n)], own
    whole = jm.log(job_id)
    assert [whole.index(f"--- job {job_id} task {n} ") for n in range(1, 9)] == sorted(
        whole.index(f"--- job {job_id} task {n} ") for n in range(1, 9))  # in task order, not file order
    cli_out = CliRunner().invoke(cli, ["--home", str(jm.home.path), "--user", "tester", "logs", str(job_id),
                                       "--task", "3"]).output
    assert "task 3: done" in cli_out and "task 4:" not in cli_out
    assert f"job {other} " not in whole and f"job {job_id} " not in jm.log(other)  # the same files, apart


def test_a_running_task_log_is_followed_and_a_killed_attempt_stays_readable(jm: JobManager, start_agent) -> None:
    """A running task's part runs to what it wrote so far (the dashboard's tail -f reads it); SIGKILL the
    agent mid-task: what the attempt wrote stays in the task's log (found through its thread's index: no
    outcome recorded its range), and the re-run has its own part."""
    from jobmanager.engine.tasklogs import parse_marks, scan_thread_indexes

    victim = start_agent("solo", 1)
    job_id = jm.submit("sleep", {"tasks": 1, "seconds": 30, "steps": 30}, retries=1)
    wait_for(lambda: "task 1: sleeping" in jm.log(job_id, task=1), what="the running task's first line")
    assert "task 1: sleeping" in jm.log_tail(job_id, 50) and jm.job(job_id).tasks[0].state == "running"
    victim.kill()
    victim.proc.wait(timeout=10)
    killed = jm.log(job_id, task=1)
    assert killed.startswith(f"--- job {job_id} task 1 (") and "sleeping" in killed and "done" not in killed
    start_agent("solo", 1)  # a restarted agent recovers the task at start-up and re-runs it (a new file)
    log = wait_for(lambda: (t := jm.log(job_id, task=1)).count("task 1: sleeping") == 2 and t,
                   what="the second attempt's part", timeout=30)
    assert isinstance(log, str) and log.startswith(killed) and log.count(f"--- job {job_id} task 1 (") == 2
    task = jm.job(job_id).tasks[0]
    runs = parse_marks(task.log_slices)  # each claim marked its agent process's run
    assert len(runs) == 2 and len(set(runs)) == 2, task.log_slices
    assert len(scan_thread_indexes(jm.home.thread_logs, job_id, [task.id], runs)[task.id]) == 2
    assert len(list(jm.home.thread_logs.glob("*.log"))) == 2  # one file per agent process and thread
    jm.cancel(job_id)
    assert jm.wait(job_id, timeout=30).state == "cancelled"
    assert jm.log(job_id, task=1).startswith(killed) and jm.log(job_id, task=1).count("task 1: sleeping") == 2


def test_a_tasks_start_records_its_part_in_the_threads_index(jm: JobManager) -> None:
    """Nothing is written until a task starts (a claim that does not go through leaves no file). A start
    appends the job, the task, the time and the offset to the thread's index; its end gives the exact range
    its outcome stores; the thread's next task, of any job, starts where the first one's records ended."""
    import os

    from jobmanager.engine.logcapture import SliceFiles
    from jobmanager.engine.tasklogs import parse_parts, scan_thread_indexes

    logs = SliceFiles(jm.home)
    folder = jm.home.thread_logs
    assert logs.path().parent == folder and not any(folder.iterdir())
    first = logs.begin(7, 70)  # job 7's task 70 starts
    assert isinstance(first.target, int) and first.start == 0
    name = logs.path().name
    assert sorted(p.name for p in folder.iterdir()) == [name, name.replace(".log", ".idx")][::-1]
    os.write(first.target, b"first task\n")
    token = logs.end(first)
    assert token is not None and [(n, s, e) for _, n, s, e in parse_parts(token)] == [(name, 0, 11)]
    second = logs.begin(8, 71)  # another job's task: the same file, after the first part
    assert (second.target, second.start) == (first.target, 11)
    found = scan_thread_indexes(folder, 7, [70, 71], [logs.run()])
    assert [(n, s, e) for _, n, s, e in found[70]] == [(name, 0, 11)] and 71 not in found  # 71 is job 8's
    running = scan_thread_indexes(folder, 8, [71], [logs.run()])[71]
    assert [(n, s, e) for _, n, s, e in running] == [(name, 11, 11)]  # to the size before the index was read
    os.write(second.target, b"second\n")
    logs.begin(9, 90)  # the thread goes on with another job's task: the part read before stays the task's
    os.write(second.target, b"job 9's\n")
    from jobmanager.engine.tasklogs import Part

    assert Part(folder / name, 11, running[0][3]).read() == b""
    again = scan_thread_indexes(folder, 8, [71], [logs.run()])[71]
    assert Part(folder / name, again[0][2], again[0][3]).read() == b"second\n"
    assert scan_thread_indexes(folder, 8, [71], ["0" * 12]) == {}  # only the runs asked for are read
    assert not jm.home.job_logs(7).exists() and not jm.home.job_logs(8).exists()


def test_a_start_the_index_cannot_take_moves_the_thread_to_new_files(jm: JobManager) -> None:
    """If a start cannot be written to the thread's index, the thread leaves its files before the task logs
    anything: a part found through an index never runs on into another job's part, and the task's range
    is still exact for its outcome."""
    import os

    from jobmanager.engine.logcapture import SliceFiles
    from jobmanager.engine.tasklogs import parse_parts

    logs = SliceFiles(jm.home)
    first = logs.begin(7, 70)
    assert isinstance(first.target, int)
    os.write(first.target, b"job 7\n")
    old = logs.path().name
    os.close(logs._mine().fds[1])  # the index's descriptor fails the next write, as a full disk would
    logs._mine().fds = (first.target, os.open(os.devnull, os.O_RDONLY))
    second = logs.begin(8, 80)
    assert logs.path().name != old and second.start == 0 and second.name == logs.path().name
    assert isinstance(second.target, int)
    os.write(second.target, b"job 8\n")
    assert [(n, s, e) for _, n, s, e in parse_parts(logs.end(second))] == [(second.name, 0, 6)]


def test_a_process_a_task_forks_does_not_log_into_its_threads_file(tmp_path) -> None:
    """A task's forked helper (a multiprocessing pool it keeps) outlives the task; its records must not land
    in whatever its parent thread runs next, another job's part of the same file."""
    import logging
    import os

    from jobmanager.engine.logcapture import router

    path = tmp_path / "thread.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with router().capture(fd, "job 1 task 1"):
            logging.getLogger("jobmanager.job.test").warning("from the task")
            pid = os.fork()
            if pid == 0:  # the forked helper
                logging.getLogger("jobmanager.job.test").warning("from the helper")
                os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(fd)
    text = path.read_text()
    assert "from the task" in text and "from the helper" not in text, text


def test_hostile_index_lines_read_nothing_but_the_jobs_own_parts(jm: JobManager) -> None:
    """An index is checked like the database's parts: lines of another shape, a task not of the job, a
    symlinked index, a FIFO, an offset past the end, a line still being written: none reads anything else."""
    import os

    job_id = jm.submit("sleep", {"tasks": 2})
    first, second = (t.id for t in jm.job(job_id).tasks)
    folder = jm.home.job_logs(job_id)
    folder.mkdir(parents=True)
    (folder / "aaaaaaaaaaaa-1.log").write_bytes(b"one\ntwo\n")
    (folder / "aaaaaaaaaaaa-1.idx").write_bytes(
        f"{first} 1 0\n../x 2 0\n{second} 3 4\n{second + 1000} 4 0\n{first} 5 {10**17}\n"
        f"{first} 6 0 junk\n{second} 7 0".encode())  # the last line has no newline yet: not read
    secret = jm.home.path / "secret.log"
    secret.write_text("SECRET\n")
    (folder / "bbbbbbbbbbbb-1.log").symlink_to(secret)
    (folder / "bbbbbbbbbbbb-1.idx").write_bytes(f"{first} 8 0\n".encode())
    (folder / "cccccccccccc-1.idx").symlink_to(folder / "aaaaaaaaaaaa-1.idx")
    (folder / "..idx").write_bytes(f"{first} 9 0\n".encode())
    os.mkfifo(folder / "dddddddddddd-1.idx")  # opening a FIFO to read would wait for a writer: it must not
    assert jm.log(job_id, task=1) == "one\n"
    assert jm.log(job_id, task=2) == "two\n"
    assert "SECRET" not in jm.log(job_id) and jm.log(job_id).count("one") == 1


def test_log_parts_from_the_database_are_checked_and_old_task_files_still_read(jm: JobManager) -> None:
    """The layout before thread files: a hostile ``log_slices`` value (another folder, a symlink, offsets
    past the end, a huge length) reads nothing outside the job's own files; a task logged by an older
    version (task-NNNN.log) reads as before, followed by any part written since."""
    from jobmanager.engine.tasklogs import parse_slices

    from .backends import write_store

    job_id = jm.submit("sleep", {"tasks": 3})
    folder = jm.home.job_logs(job_id)
    folder.mkdir(parents=True)
    part = "aaaaaaaaaaaa-1.log"
    (folder / part).write_bytes(b"first part\nsecond part\n")
    jm.home.task_log(job_id, 1).write_text("old layout line\n")
    secret = jm.home.path / "secret.log"
    secret.write_text("SECRET\n")
    (folder / "bbbbbbbbbbbb-1.log").symlink_to(secret)
    hostile = " ".join([
        f"{part}:0:1", "../secret.log:0:2", f"/{secret}:0:3", "bbbbbbbbbbbb-1.log:0:4",
        f"{part}:{10**17}:5", "cccccccccccc-1.log:0:6", f"{part}:5:not-a-number", "x" * 5000,
    ])
    write_store(jm.home.path, [
        ("UPDATE tasks SET log_slices = ? WHERE job_id = ? AND seq = 1", (f"{part}:0:1", job_id)),
        ("UPDATE tasks SET log_slices = ? WHERE job_id = ? AND seq = 2", (f"{part}:11:2", job_id)),
        ("UPDATE tasks SET log_slices = ? WHERE job_id = ? AND seq = 3", (hostile, job_id)),
    ])
    assert len(parse_slices(hostile)) == 4  # the bad shapes are dropped before any file is named
    assert jm.log(job_id, task=1) == "old layout line\nfirst part\n"  # old file, then its part up to task 2's
    assert jm.log(job_id, task=2) == "second part\n"
    assert jm.log(job_id, task=3) == "first part\n"  # its own first token only: no secret, no past-the-end read
    assert "SECRET" not in jm.log(job_id) and "SECRET" not in jm.log_tail(job_id)
    assert jm.log_tail(job_id, 1) == "second part"  # task 3's part is task 1's, read once (not again at the end)
    assert b"".join(jm.log_chunks(job_id)).decode() == jm.log(job_id)


def test_parts_in_the_store_and_thread_indexes_are_checked(jm: JobManager) -> None:
    """The thread files' layout, attacked from outside: ranges in ``log_slices`` that leave the folder,
    follow a symlink, overlap another task's part, run backwards or past the end, or repeat; thread index
    lines of another job, of another shape, a symlinked index, a FIFO. Each task reads its own part, once."""
    import os

    from .backends import write_store

    job_id = jm.submit("sleep", {"tasks": 3})
    first, second, third = (t.id for t in jm.job(job_id).tasks)
    folder = jm.home.thread_logs
    marks = "@cccccccccccc @dddddddddddd @eeeeeeeeeeee @ffffffffffff"  # claims by these runs, no outcome stored
    (folder / "aaaaaaaaaaaa-1.log").write_bytes(b"first part\nsecond part\n")
    secret = jm.home.path / "secret.log"
    secret.write_text("SECRET\n")
    (folder / "bbbbbbbbbbbb-1.log").symlink_to(secret)
    (folder / "cccccccccccc-1.log").write_bytes(b"lost part\nanother job's\n")
    (folder / "cccccccccccc-1.idx").write_bytes(
        f"{job_id} {third} 5 0\n{job_id + 1} {third} 6 10\n{job_id} {third} x 0\n../x 1 2 3\n"
        f"{job_id} {first + 1000} 7 0\n{job_id} {third} 8 12".encode())  # the last line has no newline yet
    (folder / "dddddddddddd-1.idx").symlink_to(folder / "cccccccccccc-1.idx")
    (folder / "dddddddddddd-1.log").write_bytes(b"not through a symlinked index\n")
    os.mkfifo(folder / "eeeeeeeeeeee-1.idx")
    (folder / "ffffffffffff-1.idx").write_bytes(f"{job_id} {third} 9 0\n".encode())
    (folder / "ffffffffffff-1.log").symlink_to(secret)  # its log a symlink: not read
    hostile = " ".join([
        "../secret.log@1@0-7", f"/{secret}@1@0-7", "bbbbbbbbbbbb-1.log@1@0-7", "aaaaaaaaaaaa-1.log@3@0-99999999999",
        "aaaaaaaaaaaa-1.log@4@20-10", "aaaaaaaaaaaa-1.log@5@x-1", *["aaaaaaaaaaaa-1.log@6@0-23"] * 2000,
    ])
    write_store(jm.home.path, [
        ("UPDATE tasks SET log_slices = ? WHERE id = ?", ("aaaaaaaaaaaa-1.log@1@0-11", first)),
        ("UPDATE tasks SET log_slices = ? WHERE id = ?", ("aaaaaaaaaaaa-1.log@2@11-23", second)),
        ("UPDATE tasks SET log_slices = ? WHERE id = ?", (f"{marks} {hostile}", third)),
    ])
    assert jm.log(job_id, task=1) == "first part\n"
    assert jm.log(job_id, task=2) == "second part\n"
    assert jm.log(job_id, task=3) == "lost part\n"  # from the index, up to the next part; no stored range of it
    whole = jm.log(job_id)
    assert whole == "first part\nsecond part\nlost part\n" and "SECRET" not in jm.log_tail(job_id)
    assert b"".join(jm.log_chunks(job_id)).decode() == whole


def test_crafted_overlapping_log_parts_never_read_more_than_the_file(jm: JobManager) -> None:
    """log_slices that name the same file's whole range again and again (n=1 at 0, n=2 at the end, n=3 at
    0, ...) must not turn one log read into thousands of copies of the file (a review finding)."""
    from .backends import write_store

    job_id = jm.submit("sleep", {"tasks": 2})
    folder = jm.home.job_logs(job_id)
    folder.mkdir(parents=True)
    part = "aaaaaaaaaaaa-1.log"
    body = b"x" * 9_999 + b"\n"
    (folder / part).write_bytes(body)
    crafted = " ".join(f"{part}:{0 if n % 2 else len(body)}:{n}" for n in range(1, 5001))
    write_store(jm.home.path, [
        ("UPDATE tasks SET log_slices = ? WHERE job_id = ? AND seq = 1", (crafted, job_id)),
        ("UPDATE tasks SET log_slices = ? WHERE job_id = ? AND seq = 2", (crafted, job_id)),
    ])
    whole = jm.log(job_id)
    assert whole.count("x") == len(body) - 1  # the file once, not 5,000 times
    assert sum(len(c) for c in jm.log_chunks(job_id)) <= len(body) + 1000
    assert len(jm.log(job_id, task=2)) <= len(body) + 1000
