"""One W&B service for a local sweep's trials: the holder process starts it, trials connect
to it (and only to it: a foreign or dead one is dropped), and it ends with the sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from wbclf.tracking.wandb_offline import read_offline_run
from wbclf.tracking.wandb_service import (
    SERVICE_ENV,
    SHARED_ENV,
    SharedService,
    shared_service_usable,
)

CONNECTED = "Connected to an existing wandb-core service"

TRIAL = """
import sys
from pathlib import Path
from wbclf.config import build_config
from wbclf.tracking.wandb_logger import WandbLogger

run_dir = Path(sys.argv[1])
logger = WandbLogger(mode="offline")
logger.start(cfg=build_config({}), run_dir=run_dir, class_names=["a", "b"], resume=False,
             start_epoch=1)
for epoch in (1, 2):
    logger.log_epoch(epoch, {"train/loss": 1.0 / epoch, "val/acc": 0.5 + epoch / 10})
logger.finish("finished")
"""


def _trial(run_dir: Path, env: dict[str, str]) -> str:
    """A process logging a small offline run; its W&B debug log."""
    done = subprocess.run([sys.executable, "-c", TRIAL, str(run_dir)], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                    **env}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data = read_offline_run(run_dir)
    assert [row["val/acc"] for row in data.history] == [0.6, 0.7] and data.exit_code == 0
    (log,) = run_dir.glob("wandb/offline-run-*/logs/debug.log")
    return log.read_text()


@pytest.mark.slow
def test_trials_share_the_holders_service_until_it_closes(tmp_path):
    shared = SharedService.spawn(tmp_path / "service.log")
    try:
        env = shared.env(wait_s=None)
        assert env[SERVICE_ENV] == env[SHARED_ENV] and shared_service_usable(env)
        assert shared.env() == env  # read once; no second wait
        assert CONNECTED in _trial(tmp_path / "one", env)
        assert CONNECTED in _trial(tmp_path / "two", env)
    finally:
        shared.close()
    assert shared.proc.returncode == 0
    assert not shared_service_usable(env)  # its holder is gone
    assert shared.env() == {}
    # the same trial without the sweep's mark starts its own service, as before
    foreign = {SERVICE_ENV: env[SERVICE_ENV], SHARED_ENV: ""}
    assert CONNECTED not in _trial(tmp_path / "three", foreign)


def test_only_a_marked_live_service_is_kept(tmp_path):
    import socket

    path = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a service that answers
    server.bind(str(path))
    server.listen(1)
    tcp_server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_server.bind(("127.0.0.1", 0))
    tcp_server.listen(1)
    port = tcp_server.getsockname()[1]
    token = f"3-{os.getpid()}-unix-{path}"
    assert shared_service_usable({SERVICE_ENV: token, SHARED_ENV: token})
    assert not shared_service_usable({SERVICE_ENV: token})  # not the sweep's
    assert not shared_service_usable({SERVICE_ENV: token, SHARED_ENV: token + "x"})
    gone = f"3-{os.getpid()}-unix-{tmp_path / 'none'}"
    assert not shared_service_usable({SERVICE_ENV: gone, SHARED_ENV: gone})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tcp = f"3-{dead.pid}-tcp-localhost-{port}"
    assert not shared_service_usable({SERVICE_ENV: tcp, SHARED_ENV: tcp})  # holder gone
    live = f"3-{os.getpid()}-tcp-localhost-{port}"
    assert shared_service_usable({SERVICE_ENV: live, SHARED_ENV: live})
    server.close()
    tcp_server.close()
    assert not shared_service_usable({SERVICE_ENV: token, SHARED_ENV: token})  # no answer
    assert not shared_service_usable({SERVICE_ENV: live, SHARED_ENV: live})


def test_a_trial_whose_shared_service_died_starts_its_own(tmp_path):
    """The token is marked and its holder alive, but nothing answers on the socket (the
    service crashed): the run starts its own service instead of failing."""
    path = tmp_path / "socket"
    path.write_text("")  # a file where the socket was: connecting fails
    token = f"3-{os.getpid()}-unix-{path}"
    log = _trial(tmp_path / "run", {SERVICE_ENV: token, SHARED_ENV: token})
    assert CONNECTED not in log


def test_a_holder_without_wandb_says_so_and_waits(tmp_path):
    shared = SharedService.spawn(tmp_path / "service.log", env={**os.environ,
                                                                "WANDB_MODE": "disabled"})
    try:
        assert shared.env(wait_s=None) == {} and shared.token == ""
        assert shared.proc.poll() is None  # it waits for the sweep all the same
    finally:
        shared.close()
    assert shared.proc.returncode == 0


def test_a_holder_that_dies_silently_is_not_waited_for():
    silent = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    shared = SharedService(silent)
    assert shared.env(wait_s=None) == {} and shared.token == ""
    shared.close()
    assert silent.returncode == 0
