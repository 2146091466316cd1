"""Scale-out and fault tests: several workers on one study, killed workers, exact trial counts.

The distributed tests run real processes (``python -m repvgg_nas.search``)
against real storages: a PostgreSQL 15 server this module starts on loopback
(initdb in a temp dir, run as a non-root user), a journal file, and the
default SQLite file. A worker is killed with SIGKILL while it trains; the
study must still end with exactly N completed search trials, the killed
trial retried once, and every result recorded before the kill unchanged.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna

from repvgg_nas import lifecycle
import pytest

from repvgg_nas import ConfigError
from repvgg_nas.storage import RetryStaleTrial, make_storage, redact_url, storage_kind
from repvgg_nas.search import (
    DeviceLock, admission, current_worker, pid_alive, recover_trials, slot_state, worker_env,
)

TS = optuna.trial.TrialState

from .helpers import TINY_SPACE, write_tiny_study

SPACE = TINY_SPACE

HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "4"]


def write_study(folder: Path, name: str, n: int, *, train_size: int = 64, epochs: int = 1) -> Path:
    """A tiny study file; ``train_size``/``epochs`` make a trial slow enough to be killed mid-way."""
    return write_tiny_study(folder, n, space=SPACE, name=name, train_size=train_size, epochs=epochs)


def search_cmd(study: Path, reports: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "repvgg_nas.search", "--study", str(study), "--reports-dir", str(reports),
            "--no-progress", *extra]


def child_env(tmp: Path) -> dict[str, str]:
    """One thread per worker (2 shared cores) and a private measurement-lock folder."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "REPVGG_NAS_LOCK_DIR": str(tmp / "locks"),
            "PYTHONUNBUFFERED": "1"}


# ---- a PostgreSQL server on loopback -------------------------------------------------------------
def _pg_bin(name: str) -> str | None:
    dirs = [os.environ.get("PG_BIN", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return str(Path(d) / name)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_user() -> tuple[str, list[str]]:
    """The OS user to run the server as, and the prefix that runs a command as that user.

    ``initdb`` refuses root: as root, use the Debian package's ``postgres`` user
    (or create a system user); as anyone else, run as oneself.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name, []
    for user in ("postgres", "repvgg_pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return user, ["runuser", "-u", user, "--"]
    subprocess.run(["useradd", "--system", "--no-create-home", "repvgg_pg"], check=True, capture_output=True)
    return "repvgg_pg", ["runuser", "-u", "repvgg_pg", "--"]


@contextlib.contextmanager
def local_postgres(durable: bool = False) -> Iterator[Callable[[str], str]]:
    """Start a throw-away PostgreSQL server on 127.0.0.1; yield ``new_db(name) -> URL``.

    ``durable=False`` turns fsync off (tests need speed, not crash safety of
    the server itself); benchmarks pass True to compare with SQLite fairly.

    Raises RuntimeError when the server binaries or psycopg are missing (the
    fixture turns that into a skip; ``.ci/run`` installs both).
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    try:
        import psycopg
    except ImportError:
        raise RuntimeError("psycopg is not installed; pip install 'psycopg[binary]'") from None
    user, as_user = _pg_user()
    root = Path(tempfile.mkdtemp(prefix="repvgg_pg_"))
    data = root / "data"
    pw = pwd.getpwnam(user)
    os.chown(root, pw.pw_uid, pw.pw_gid)
    run = lambda cmd: subprocess.run([*as_user, *cmd], cwd=root, check=True, capture_output=True, text=True)  # noqa: E731
    port = _free_port()
    started = False
    try:
        run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        run([pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
             f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
             + ("" if durable else " -c fsync=off"), "start"])
        started = True

        def new_db(name: str) -> str:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{name}"')
            return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

        yield new_db
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text()[-2000:] if (root / "server.log").exists() else ""
        raise RuntimeError(f"postgres failed: {e.cmd}: {e.stderr or e.stdout}\n{log}") from None
    finally:
        if started:
            subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                           cwd=root, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Callable[[str], str]]:
    try:
        with local_postgres() as new_db:
            yield new_db
    except RuntimeError as e:
        if ("not found" in str(e) or "not installed" in str(e)) and not os.environ.get("REPVGG_NAS_REQUIRE_PG"):
            pytest.skip(str(e))  # CI sets REPVGG_NAS_REQUIRE_PG=1: there a missing server is a failure
        raise


# ---- driving and checking a distributed study ---------------------------------------------------------
def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(url, heartbeat_interval=None))


def search_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False)
            if lifecycle.role(t) != lifecycle.Role.PRUNED_VARIANT and not lifecycle.lost(t)]


def kill_a_training_worker(url: str, name: str, procs_alive: Callable[[], bool], timeout: float = 180) -> dict:
    """Once a trial has completed and another is training, SIGKILL the worker of the training one.

    Returns the kill record: pid, the trial it ran, and a snapshot of the
    results completed before the kill (number -> (values, params)).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert procs_alive(), "the search ended before a worker could be killed"
        with contextlib.suppress(Exception):  # the study may not exist yet
            trials = load(url, name).get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == TS.COMPLETE]
            training = [t for t in trials if t.state == TS.RUNNING and "latency_ms" in t.user_attrs
                        and "train_seconds" not in t.user_attrs and t.user_attrs.get("duplicate_of") is None]
            if complete and training:
                victim = training[0]
                pid = int(str(victim.user_attrs["worker"]).rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                return {"pid": pid, "trial": victim.number, "worker": victim.user_attrs["worker"],
                        "before": {t.number: (t.values, t.params) for t in complete}}
        time.sleep(0.1)
    raise AssertionError("no trial was caught training")


def check_exact(study: optuna.Study, n: int, kill: dict | None = None) -> None:
    """Exactly ``n`` completed search trials, none duplicated, none lost, the killed one retried."""
    trials = search_trials(study)
    by_number = {t.number: t for t in trials}
    complete = [t for t in trials if t.state == TS.COMPLETE]
    assert len(complete) == n, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
    assert not [t for t in trials if t.state == TS.RUNNING]  # every worker finished its trials
    # No slot answered twice: a retry and its original never both complete.
    origins = [t.user_attrs.get("retry_of") for t in complete if t.user_attrs.get("retry_of") is not None]
    assert len(origins) == len(set(origins))
    for o in origins:
        assert by_number[o].state == TS.FAIL
    assert all(t.state != TS.FAIL or t.user_attrs.get("fail_reason", "").startswith("interrupted")
               or t.user_attrs.get("fail_reason") is None for t in trials)
    if kill is None:
        assert all(t.state == TS.COMPLETE for t in trials if t.state.is_finished())
        return
    killed = by_number[kill["trial"]]
    assert killed.state == TS.FAIL and killed.user_attrs["worker"] == kill["worker"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].state == TS.COMPLETE
    assert retries[0].params == killed.params
    for number, (values, params) in kill["before"].items():  # every earlier result intact
        assert (by_number[number].values, by_number[number].params) == (values, params)


def run_workers_and_kill(cmd: list[str], env: dict, url: str, name: str, tmp: Path,
                         killer: Callable[..., dict] | None = None) -> tuple[dict, int, str]:
    """Run ``cmd``, let ``killer`` (default :func:`kill_a_training_worker`) SIGKILL one worker, wait for the end."""
    log = (tmp / "workers.log").open("w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        kill = (killer or kill_a_training_worker)(url, name, lambda: proc.poll() is None)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    log.seek(0)
    return kill, code, log.read()


# ---- storages ------------------------------------------------------------------------------------
def test_storage_urls(tmp_path):
    sqlite = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(sqlite, optuna.storages.RDBStorage) and sqlite.get_heartbeat_interval() == 60
    assert isinstance(sqlite.heartbeat_stale_trial_callback, RetryStaleTrial)
    assert sqlite.engine.dialect.name == "sqlite"
    assert make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=None).get_heartbeat_interval() is None
    journal = make_storage(f"journal:{tmp_path / 'deep' / 'j.log'}")
    assert isinstance(journal, optuna.storages.JournalStorage) and (tmp_path / "deep" / "j.log").is_file()
    assert storage_kind("journal:x") == "journal" and storage_kind("sqlite:///x") == "sqlite"
    assert storage_kind("postgresql://u@h/db") == "rdb"
    assert redact_url("postgresql://bob:secret@h:5/db") == "postgresql://bob:***@h:5/db"


@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg://nobody:hunter2@127.0.0.1:1/x", "cannot open storage 'postgresql+psycopg://nobody:***@127.0.0.1:1/x'"),
    ("sqlite:////no/such/dir/s.db", "cannot open storage 'sqlite:////no/such/dir/s.db'"),
    ("not a url", "is not a storage URL"),
    ("journal:", "names no file"),
])
def test_bad_storage_urls_are_one_line_config_errors(url, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*").replace("+", r"\+")) as e:
        make_storage(url)
    assert "\n" not in str(e.value) and "hunter2" not in str(e.value)


def test_sqlite_waits_for_a_busy_writer(tmp_path):
    """Two processes on one SQLite file: the busy timeout makes the second wait, not fail."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=make_storage(url, heartbeat_interval=None))
    code = (
        "import sqlite3, time, sys; c = sqlite3.connect(sys.argv[1]); c.execute('BEGIN EXCLUSIVE'); "
        "print('locked', flush=True); time.sleep(1.5); c.commit()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s.db")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    study.enqueue_trial({})  # blocks on the lock, then succeeds
    assert time.monotonic() - t0 > 0.5 and holder.wait(10) == 0
    assert len(study.trials) == 1


# ---- slot accounting (pure) --------------------------------------------------------------------------------
def _study_with(states_attrs: list[tuple[TS, dict]]) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(directions=["maximize", "maximize"])
    for state, attrs in states_attrs:
        values = [0.5, 100.0] if state == TS.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs=attrs))
    return study.get_trials(deepcopy=False)


def test_slots_count_each_result_once_and_retries_keep_their_place():
    trials = _study_with([
        (TS.COMPLETE, {}),                                    # 0
        (TS.FAIL, {"fail_reason": "interrupted: worker x died", "outcome": "died"}),  # 1 died...
        (TS.RUNNING, {"admitted": True}),                    # 2
        (TS.WAITING, {"retry_of": 1}),                        # 3 ...retried: holds slot 1
        (TS.FAIL, {"fail_reason": "diverged: nan"}),          # 4 a real failure counts
        (TS.COMPLETE, {"parent_trial": 0}),                   # 5 pruned variant: not a search trial
        (TS.PRUNED, {"outcome": "lost"}),                     # 6 lost: never ran, never counts
    ])
    s = slot_state(trials, 4)
    assert (s.done, s.held, s.running, s.admissible_waiting) == (2, 4, 1, 1)
    assert s.runnable and not s.finished
    assert admission(3, trials, 4) is None  # the retry runs even though 4 slots are held
    assert "fill the target" in admission(trials[2].number, trials, 2)  # 2 slots below it
    # The died trial with no retry yet counts as a failure until the retry appears.
    assert slot_state(trials[:3], 3).done == 2


def test_surplus_and_duplicate_trials_are_refused():
    trials = _study_with([
        (TS.COMPLETE, {}),
        (TS.FAIL, {}),                                        # 1: heartbeat-stale (no reason)
        (TS.COMPLETE, {"retry_of": 1}),                       # 2: its retry completed
        (TS.RUNNING, {"retry_of": 1}),                        # 3: a second retry of 1: duplicate
        (TS.RUNNING, {}),                                     # 4
    ])
    assert admission(3, trials, 10).startswith("duplicate")
    assert admission(4, trials, 10) is None
    assert admission(4, trials, 2) is not None  # slots 0 and 1 fill a target of 2
    assert slot_state(trials, 2).finished


def test_a_worker_that_finds_every_slot_taken_asks_for_no_trial():
    """The race the accounting exists for: a worker looks for a trial after the others filled the target.
    The slot check and the ask are one step under the claim lock, so it creates no trial at all; the
    reference queued past the target stays queued for a longer run."""
    from repvgg_nas.report import trials_frame
    from repvgg_nas.search.loop import DONE, claim_search_trial

    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5, 100.0]))           # 0: another worker's result
    study.enqueue_trial({"x": 3}, user_attrs={"reference": "RepVGG-A0", "role": "reference"})  # 1: queued
    assert claim_search_trial(study, 1) == DONE
    assert len(study.trials) == 2 and study.trials[1].state == TS.WAITING
    trial = claim_search_trial(study, 2)  # a target of 2 admits the queued reference, by number
    assert isinstance(trial, optuna.Trial) and trial.number == 1 and trial.user_attrs["admitted"]
    assert lifecycle.role(study.trials[1]) == lifecycle.Role.REFERENCE
    assert set(trials_frame(study)["number"]) == {0, 1}


def test_a_trial_that_lost_its_slot_after_the_ask_ends_lost_and_is_never_counted():
    """Where the claim lock cannot span processes, the check after the ask catches a lost race: the trial
    ends at once with the structured outcome ``lost``, which every count and the frames skip."""
    from repvgg_nas.report import trials_frame
    from repvgg_nas.search.loop import claim_trial

    study = optuna.create_study(directions=["maximize", "maximize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5, 100.0]))  # 0: filled the target meanwhile
    assert claim_trial(study, None, target=1) is None
    t = study.trials[1]
    assert t.state == TS.PRUNED and lifecycle.outcome(t) == lifecycle.Outcome.LOST
    assert "fill the target of 1" in t.user_attrs["prune_reason"] and "surplus" not in t.user_attrs
    assert slot_state(study.trials, 1).finished and 1 not in set(trials_frame(study)["number"])
    assert not lifecycle.counts_toward_target(t) and not lifecycle.is_search(t)


# ---- worker identity, recovery and the device lock ------------------------------------------------
def test_recovery_retries_only_trials_of_dead_local_workers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = current_worker()
    study = optuna.create_study(directions=["maximize", "maximize"])
    for worker in (f"{me.host}:{dead.pid}", me.name, f"elsewhere:{dead.pid}"):
        t = study.ask()
        t.suggest_int("x", 0, 9)
        t.set_user_attr("worker", worker)
    assert pid_alive(me.pid, me.start) and not pid_alive(dead.pid)
    assert recover_trials(study, finished=False) == [0]
    states = [t.state for t in study.trials]
    assert states == [TS.FAIL, TS.RUNNING, TS.RUNNING, TS.WAITING]
    retry = study.trials[3]
    assert retry.user_attrs["retry_of"] == 0 and retry.system_attrs["fixed_params"] == study.trials[0].params
    assert recover_trials(study, finished=True) == []  # already retried: never twice
    # Finished as interrupted: a Ctrl-C'd trial is queued again at start-up; one that another
    # worker's recovery failed a moment ago is left to that worker, which queues it itself.
    for reason, outcome in (("interrupted: Ctrl-C", "interrupted"), ("interrupted: worker elsewhere:1 died", "died")):
        study.add_trial(optuna.trial.create_trial(
            state=TS.FAIL, params={"x": 1}, distributions={"x": optuna.distributions.IntDistribution(0, 9)},
            user_attrs={"fail_reason": reason, "outcome": outcome},
        ))
    assert recover_trials(study, finished=True) == [4]


def test_measurement_waits_for_another_process_training(tmp_path):
    code = (
        "import sys, time; from repvgg_nas.search import DeviceLock\n"
        "with DeviceLock('cpu', sys.argv[1]).shared():\n"
        "    print('training', flush=True); time.sleep(1.5)\n"
    )
    trainer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert trainer.stdout.readline().strip() == "training"
    lock = DeviceLock("cpu", tmp_path)
    t0 = time.monotonic()
    with lock.exclusive() as alone:
        waited = time.monotonic() - t0
        assert trainer.poll() is not None or waited > 0.5
    assert alone and waited > 0.5 and trainer.wait(10) == 0
    with lock.shared(), pytest.raises(RuntimeError, match="deadlock"):
        with lock.exclusive():
            pass


def test_a_long_training_lets_a_queued_measurement_run_at_its_pauses(tmp_path):
    code = (
        "import sys, time; from repvgg_nas.search import DeviceLock\n"
        "print('queued', flush=True)\n"
        "with DeviceLock('cpu', sys.argv[1]).exclusive() as alone:\n"
        "    print('measuring', alone, flush=True); time.sleep(0.5)\n"
        "print('measured', flush=True)\n"
    )
    lock = DeviceLock("cpu", tmp_path)
    with lock.shared(), lock.shared():  # nested holds (a trial inside the objective's hold) are all yielded
        t0 = time.monotonic()
        lock.yield_turn()  # nobody waits: back at once
        assert time.monotonic() - t0 < 0.5
        meter = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert meter.stdout.readline().strip() == "queued"
        time.sleep(1.0)  # the measurement waits for this training: it holds the device
        assert meter.poll() is None
        t0 = time.monotonic()
        lock.yield_turn()  # a pause between rungs: the measurement runs now, alone, and this training waits
        assert time.monotonic() - t0 >= 0.4
        assert meter.stdout.readline().strip() == "measuring True"
        assert meter.stdout.readline().strip() == "measured" and meter.wait(10) == 0
    lock.yield_turn()  # outside shared(): nothing to yield


def test_workers_are_pinned_one_gpu_each():
    assert [worker_env(i, ["0", "1"], {})["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    assert "CUDA_VISIBLE_DEVICES" not in worker_env(0, ["0"], {})


# ---- real processes, real storages ------------------------------------------------------------------------
def test_postgres_three_workers_run_exactly_n_trials(postgres, tmp_path):
    url = postgres("exact")
    study_file = write_study(tmp_path, "exact", n=6)
    r = subprocess.run(search_cmd(study_file, tmp_path / "r", "--storage", url, "--workers", "3", *HEARTBEAT),
                       env=child_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(url, "exact")
    check_exact(study, 6)
    workers = {t.user_attrs["worker"] for t in search_trials(study) if t.state == TS.COMPLETE}
    assert len(workers) >= 2  # the work really was shared
    # Every fresh measurement was taken with no other worker training on the device.
    assert all(t.user_attrs.get("measure_exclusive") for t in search_trials(study)
               if t.state == TS.COMPLETE and not t.user_attrs.get("measure_cached"))
    assert (tmp_path / "r" / "exact" / "trials.csv").is_file() and (tmp_path / "r" / "exact" / "index.html").is_file()


def test_postgres_killed_worker_trial_is_retried_and_nothing_is_lost(postgres, tmp_path):
    url = postgres("kill")
    study_file = write_study(tmp_path, "kill", n=6, train_size=768, epochs=4)
    cmd = search_cmd(study_file, tmp_path / "r", "--storage", url, "--workers", "3", *HEARTBEAT)
    kill, code, out = run_workers_and_kill(cmd, child_env(tmp_path), url, "kill", tmp_path)
    assert code == 1 and "killed by SIGKILL" in out, out[-3000:]
    study = load(url, "kill")
    check_exact(study, 6, kill)
    killed = study.trials[kill["trial"]]
    assert "fail_reason" not in killed.user_attrs  # failed by Optuna's heartbeat, not by us
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == kill["trial"])
    assert retry.system_attrs["failed_trial"] == kill["trial"]  # Optuna's own retry bookkeeping


def test_journal_killed_worker_trial_is_retried(tmp_path):
    url = f"journal:{tmp_path / 'r' / 'jkill' / 'journal.log'}"
    study_file = write_study(tmp_path, "jkill", n=5, train_size=768, epochs=4)
    cmd = search_cmd(study_file, tmp_path / "r", "--storage", url, "--workers", "3")
    kill, code, out = run_workers_and_kill(cmd, child_env(tmp_path), url, "jkill", tmp_path)
    assert code == 1, out[-3000:]
    study = load(url, "jkill")
    check_exact(study, 5, kill)
    assert study.trials[kill["trial"]].user_attrs["fail_reason"] == f"interrupted: worker {kill['worker']} died"


def test_sqlite_single_process_kill_and_resume(tmp_path):
    study_file = write_study(tmp_path, "skill", n=4, train_size=768, epochs=4)
    reports = tmp_path / "r"
    url = f"sqlite:///{reports / 'skill' / 'study.db'}"
    cmd = search_cmd(study_file, reports)
    env = child_env(tmp_path)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kill = kill_a_training_worker(url, "skill", lambda: proc.poll() is None)
        assert kill["pid"] == proc.pid
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load(url, "skill").trials[kill["trial"]].state == TS.RUNNING  # left behind by the dead process
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    study = load(url, "skill")
    check_exact(study, 4, kill)
    assert study.trials[kill["trial"]].user_attrs["fail_reason"].startswith("interrupted: worker")
