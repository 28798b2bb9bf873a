"""Warm trial workers: trials forked from a worker that imported wbclf once, each still its
own process (kill, cores, environment), with the metrics of a cold trial."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.test_sweep_e2e import run_dirs, write_sweep
from wbclf.sweeps.warm import WarmWorker, warm_enabled, warm_program
from wbclf.tracking.wandb_offline import read_offline_run

TRAIN = str(REPO / "scripts" / "train.py")


def test_only_this_checkouts_programs_run_warm(tmp_path):
    assert warm_program(["/usr/bin/env", sys.executable, TRAIN, "--lr=0.1"]) == \
        (TRAIN, ["--lr=0.1"])
    assert warm_program([sys.executable, TRAIN]) == (TRAIN, [])
    assert warm_program(["/usr/bin/env", "python2", TRAIN]) is None  # another interpreter
    other = tmp_path / "scripts" / "train.py"  # a program that would import another wbclf
    other.parent.mkdir()
    other.write_text("print('hi')\n")
    assert warm_program([sys.executable, str(other)]) is None
    assert warm_program([sys.executable, "-m", "wbclf.cli", "train"]) is None
    assert warm_enabled({"WBCLF_WARM_TRIALS": "1"}) == sys.platform.startswith("linux")
    assert not warm_enabled({"WBCLF_WARM_TRIALS": "0"})


END_TRIAL_PROGRAM = """
import atexit, sys, threading
from pathlib import Path
from wbclf.sweeps.warm import end_trial

out = Path(sys.argv[1])

class Teardown:
    def __del__(self):
        (out / "torn-down").write_text("module objects were destroyed")

keep = Teardown()
atexit.register(lambda: (out / "atexit").write_text("ran"))
worker = threading.Thread(target=lambda: (out / "thread").write_text(str(sum(range(10**6)))))
worker.start()
# An idle pool's threads wait for work until the pool's exit hook wakes them: joined
# without that hook (a plain join of every thread), the trial would never end.
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(2)
pool.submit(sum, range(10)).result()
if len(sys.argv) > 2:  # an interrupt lands while the exit waits for a thread
    import os, signal

    main_id = threading.main_thread().ident

    def interrupt_the_join():  # once the main thread waits in threading's exit code
        waiting = ("_shutdown", "_wait_for_tstate_lock")
        while sys._current_frames()[main_id].f_code.co_name not in waiting:
            pass
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_the_join).start()
print("buffered line", end="")  # stdout is a file here: block-buffered, not yet written
end_trial(3)
"""


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_trial_ends_like_the_interpreter_less_the_module_teardown(tmp_path, interrupted):
    """end_trial: pools stopped, threads joined, atexit run (also after an interrupt while
    joining), output flushed, exit code kept; the seconds of module teardown (nothing to
    save by then) are skipped."""
    import subprocess

    argv = [sys.executable, "-c", END_TRIAL_PROGRAM, str(tmp_path)]
    with open(tmp_path / "stdout", "w") as stdout:
        # the timeout only turns a hang (the defect this guards against) into a failure
        done = subprocess.run(argv + (["interrupt"] if interrupted else []), stdout=stdout,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "stdout").read_text() == "buffered line"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == str(sum(range(10**6)))
    assert not (tmp_path / "torn-down").exists()


PRELOADED_TRIAL = """
import sys
from wbclf.sweeps.warm import preload
from wbclf.cli import main

preload()
import gc
import importlib.metadata
print("FROZEN", gc.get_freeze_count() > 100_000)  # the imports, out of the collector's way
listing, reads = importlib.metadata.distributions, []


def counted(*args, **kwargs):  # the listings wandb makes for the run's requirements.txt
    reads.append(sys._getframe(1).f_code.co_filename.endswith("wandb/util.py"))
    return listing(*args, **kwargs)


importlib.metadata.distributions = counted
before = set(sys.modules)
code = main(["train", *sys.argv[1:]])
print("PACKAGE_LISTINGS", sum(reads))  # read by the worker, once
heavy = ("wandb", "opentelemetry", "requests", "torch", "timm", "torchvision", "matplotlib",
         "albumentations", "cv2", "PIL", "scipy", "numpy")
late = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in heavy)
print("LATE", late, code)
"""


@pytest.mark.slow
def test_a_warm_trial_imports_no_heavy_module_itself(tmp_path, toy_lesions):
    """Whatever a run with W&B needs (wandb.init's own lazy imports included) is imported
    by the worker once, not by each forked trial; the garbage collector leaves it alone."""
    import subprocess

    args = [f"--dataset={toy_lesions}", "--epochs=1", "--image_size=32", "--width=8",
            "--log_samples=4", "--wandb_mode=offline", f"--out_dir={tmp_path}"]
    done = subprocess.run([sys.executable, "-c", PRELOADED_TRIAL, *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                    "WANDB_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FROZEN True" in done.stdout.splitlines()
    assert "PACKAGE_LISTINGS 0" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1] == "LATE [] 0"
    # ... and the run's requirements.txt lists what is installed, as a cold run's does
    (listed,) = tmp_path.glob("*/wandb/offline-run-*/files/requirements.txt")
    installed = {f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()}
    assert set(listed.read_text().split()) == installed


def test_the_package_list_is_read_once_and_then_remembered(monkeypatch):
    """remember_installed_packages: wandb's working_set answers from the list read then,
    without reading a metadata file again; a second call changes nothing."""
    import wandb.util

    from wbclf.sweeps.warm import remember_installed_packages

    monkeypatch.setattr(wandb.util, "working_set", wandb.util.working_set)  # put back after
    fresh = [(p.key, p.version) for p in wandb.util.working_set()]
    assert remember_installed_packages() == len(fresh) > 0
    monkeypatch.setattr(importlib.metadata, "distributions", _no_more_reading)
    assert [(p.key, p.version) for p in wandb.util.working_set()] == fresh
    assert [(p.key, p.version) for p in wandb.util.working_set()] == fresh  # not used up
    assert remember_installed_packages() == 0


def _no_more_reading(*args, **kwargs):
    raise AssertionError("the package metadata was read again")


def _parent_and_cores(pid: int) -> tuple[int, str]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":\t", 1) for line in status if ":\t" in line)
    return int(fields["PPid"]), fields["Cpus_allowed_list"].strip()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + /proc")
def test_a_forked_trial_is_its_own_process(tmp_path, toy_lesions):
    """A kill ends the trial alone; the worker forks the next one; cores and env apply."""
    worker = WarmWorker.open(tmp_path / "worker.log")
    assert worker.proc.poll() is None  # open() refuses a worker whose imports started CUDA
    try:
        long_run = [sys.executable, TRAIN, f"--dataset={toy_lesions}", "--epochs=100000",
                    "--image_size=32", "--width=8", "--wandb_mode=disabled",
                    f"--out_dir={tmp_path}", "--run_name=long"]
        trial = worker.start(long_run, env=dict(os.environ), log_path=tmp_path / "long.log",
                             cpus=[0])
        assert trial is not None and trial.poll() is None
        assert _parent_and_cores(trial.pid) == (worker.proc.pid, "0")
        trial.kill()
        assert trial.wait(timeout=120) == -signal.SIGKILL
        assert worker.proc.poll() is None  # the worker lives on

        show = [sys.executable, TRAIN, "--lr=0.25", "--print-config"]
        env = {**os.environ, "WBCLF_TEST_MARK": "from-the-sweep"}
        second = worker.start(show, env=env, log_path=tmp_path / "show.log", cpus=None)
        assert second is not None and second.wait(timeout=120) == 0
        log = (tmp_path / "show.log").read_text()
        assert f"warm start (a fork of worker {worker.proc.pid})" in log
        assert json.loads(log[log.index("{"):])["lr"] == 0.25
        failing = [sys.executable, TRAIN, "--lr=oops"]
        third = worker.start(failing, env=env, log_path=tmp_path / "bad.log", cpus=None)
        assert third is not None and third.wait(timeout=120) == 2
        assert "wbclf: error:" in (tmp_path / "bad.log").read_text()
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def _warm_then_cold(tmp_path: Path, sweep: Path, pins: list[str], trials: int = 2
                    ) -> Iterator[tuple[str, Path, dict[str, dict]]]:
    """Run ``sweep`` warm, then cold: (mode, its out dir, its run summaries)."""
    for mode, switch in (("warm", "1"), ("cold", "0")):
        out = tmp_path / mode
        result = run_cli("sweep", str(sweep), *pins, "--out", str(out),
                         env={"WBCLF_WARM_TRIALS": switch})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        runs = run_dirs(out)
        assert len(runs) == trials and {s["status"] for s in runs.values()} == {"finished"}
        yield mode, out, runs


@pytest.mark.slow
def test_warm_and_cold_sweeps_give_the_same_metrics(tmp_path, toy_lesions):
    """The same trials forked warm and started cold: identical val/acc, epoch by epoch."""
    sweep = write_sweep(tmp_path, "warm", {"lr": {"values": [1.0e-3, 1.0e-2]}})
    pins = ["--set", f"dataset={toy_lesions}", "--set", "epochs=2", "--set", "image_size=32",
            "--set", "limit_per_class=20", "--set", "width=8", "--set", "log_samples=4",
            "--set", "num_workers=0"]
    histories = {}
    wandb_runs: dict[str, dict[str, list]] = {"warm": {}, "cold": {}}
    for mode, out, runs in _warm_then_cold(tmp_path, sweep, pins):
        logs = [(out / "logs" / f"{name}.log").read_text() for name in runs]
        assert all(("warm start" in text) == (mode == "warm") for text in logs)
        histories[mode] = {
            name: [json.loads(line)["val/acc"]
                   for line in (out / name / "metrics.jsonl").read_text().splitlines()]
            + [runs[name]["test/acc"]] for name in runs}
        assert all((out / name / "samples.png").is_file() for name in runs)
        # W&B (offline here): warm trials log through the sweep's one service, cold ones
        # each start their own; what the runs hold is the same
        for name in runs:
            (debug,) = (out / name).glob("wandb/offline-run-*/logs/debug.log")
            shared = "Connected to an existing wandb-core service" in debug.read_text()
            assert shared == (mode == "warm")
            wandb_runs[mode][name] = [row["val/acc"] for row in
                                      read_offline_run(out / name).history if "val/acc" in row]
    assert (tmp_path / "warm" / "logs" / "wandb-service.log").is_file()
    assert histories["warm"] == histories["cold"]
    assert wandb_runs["warm"] == wandb_runs["cold"]
    assert all(len(v) == 2 for v in wandb_runs["warm"].values())


@pytest.mark.slow
def test_warm_trials_of_a_pretrained_sweep_take_the_workers_build(tmp_path, toy_lesions):
    """The worker builds the sweep's pretrained model for the trials' seed once; its trials
    train exactly as cold ones do (the head's init included)."""
    sweep = write_sweep(tmp_path, "frozen", {"lr": {"value": 1.0e-2}, "seed": {"value": 5}})
    pins = ["--set", f"dataset={toy_lesions}", "--set", "epochs=2", "--set", "image_size=32",
            "--set", "limit_per_class=10", "--set", "model=tf_efficientnet_lite0",
            "--set", "strategy=frozen", "--set", "log_samples=0", "--set", "num_workers=0",
            "--set", "wandb_mode=disabled"]
    histories = {}
    for mode, out, runs in _warm_then_cold(tmp_path, sweep, pins, trials=1):
        histories[mode] = {
            name: [json.loads(line)["train/loss"]
                   for line in (out / name / "metrics.jsonl").read_text().splitlines()]
            for name in runs}
    worker_log = (tmp_path / "warm" / "logs" / "warm-worker.log").read_text()
    assert "built tf_efficientnet_lite0 for seed(s) 5" in worker_log
    assert histories["warm"] == histories["cold"]


PRELOADED_WEIGHTS = """
from wbclf.sweeps.warm import preload
preload()
from wbclf.models import packaged
before = len(packaged._READ)
held = [v for d in packaged._READ.values() for v in d.values()]
again = packaged.read_stored_state_dict(packaged.packaged_weights_for("tf_efficientnet_lite0"))
print(before, len(held), all(a is b for a, b in zip(again.values(), held)))
"""


@pytest.mark.parametrize("models, expected", [
    ("tf_efficientnet_lite0,resnet18", "1 296 True"),  # resnet18 has none packaged
    ("", "0 0 True")])
def test_the_worker_reads_the_sweeps_packaged_weights_once(models, expected, tmp_path):
    """The models a sweep names reach the worker, which reads their packaged weights before
    it forks: a trial's read is then the worker's tensors, not the file again."""
    import subprocess

    from wbclf.sweeps.schema import load_sweep
    from wbclf.sweeps.warm import MODELS_ENV

    spec = load_sweep(REPO / "sweeps" / "transfer_frozen.yaml")
    assert spec.choices("model") == ["tf_efficientnet_lite0", "resnet18",
                                     "mobilenetv3_large_100"]
    assert spec.choices("strategy") == ["frozen"] and spec.choices("no_such_key") == []
    done = subprocess.run([sys.executable, "-c", PRELOADED_WEIGHTS], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                                    MODELS_ENV: models})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == expected
    worker = WarmWorker.open(tmp_path / "worker.log", models=models.split(",") if models else [])
    try:
        environ = Path(f"/proc/{worker.proc.pid}/environ").read_bytes().split(b"\0")
        assert f"{MODELS_ENV}={models}".encode() in environ
    finally:
        worker.close()


def _spy_on_spawn(monkeypatch, kind: type = WarmWorker) -> list:
    """The workers (or W&B service holders) the sweep spawns: the real ones, recorded."""
    spawned: list = []
    spawn = kind.spawn.__func__

    def recorded(cls, *args, **kwargs):
        spawned.append(spawn(cls, *args, **kwargs))
        return spawned[-1]

    monkeypatch.setattr(kind, "spawn", classmethod(recorded))
    return spawned


def _during_preflight(monkeypatch, spawned: list) -> list[list[bool]]:
    """For each pre-flight check: whether each spawned process was running during it."""
    from wbclf.sweeps import main as sweep_main

    seen: list[list[bool]] = []
    preflight = sweep_main.run_preflight

    def checked(spec):
        seen.append([started.proc.poll() is None for started in spawned])
        return preflight(spec)

    monkeypatch.setattr(sweep_main, "run_preflight", checked)
    return seen


def test_the_worker_imports_while_the_preflight_runs_and_ends_with_a_failed_one(
        tmp_path, monkeypatch):
    """Started before the inputs are checked (both take seconds, on two cores), the worker
    and the W&B service holder are ended when the check fails, and the folders made for
    their logs are removed: a sweep with a missing input still leaves nothing behind."""
    from wbclf.sweeps.main import main
    from wbclf.tracking.wandb_service import SharedService

    monkeypatch.chdir(REPO)
    workers = _spy_on_spawn(monkeypatch)
    services = _spy_on_spawn(monkeypatch, SharedService)
    seen = _during_preflight(monkeypatch, workers)
    sweep = write_sweep(tmp_path, "missing", {"dataset": {"value": str(tmp_path / "nowhere")}})
    out = tmp_path / "runs" / "missing"  # neither folder exists yet
    assert main([str(sweep), "--out", str(out)]) == 2
    assert seen == [[True]]  # one worker, already importing while the check ran
    assert len(services) == 1  # W&B is on (offline): its holder started too
    assert all(p.proc.returncode is not None for p in [*workers, *services])  # all ended
    assert not (tmp_path / "runs").exists()


def test_an_output_folder_that_is_a_dangling_link_is_left_alone(tmp_path, monkeypatch):
    """A `--out` that links to an unmounted disk: nothing starts early, and the link stays
    (it is not a folder the sweep made)."""
    from wbclf.sweeps.prestart import Prestarted
    from wbclf.sweeps.schema import load_sweep

    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "unmounted" / "disk")
    spec = load_sweep(write_sweep(tmp_path, "linked", {"lr": {"value": 1.0e-3}}), [])
    assert Prestarted.begin(spec, TRAIN, out) is None
    assert out.is_symlink()


def test_the_worker_started_before_the_preflight_runs_the_trials(tmp_path, monkeypatch,
                                                                   toy_lesions):
    """The runner adopts the worker and the W&B service holder started during the check:
    one of each for the sweep, its trials forked from that worker and joined to that
    service."""
    from wbclf.sweeps.main import main
    from wbclf.tracking.wandb_service import SharedService

    monkeypatch.chdir(REPO)
    workers = _spy_on_spawn(monkeypatch)
    services = _spy_on_spawn(monkeypatch, SharedService)
    seen = _during_preflight(monkeypatch, workers)
    sweep = write_sweep(tmp_path, "early", {"lr": {"values": [1.0e-3, 1.0e-2]}})
    out = tmp_path / "out"
    code = main([str(sweep), "--out", str(out), "--set", f"dataset={toy_lesions}",
                 "--set", "epochs=1", "--set", "image_size=32", "--set", "limit_per_class=20",
                 "--set", "width=8", "--set", "log_samples=0", "--set", "num_workers=0",
                 "--set", "wandb_mode=offline"])
    assert code == 0
    assert seen == [[True]] and len(workers) == 1 and len(services) == 1
    runs = run_dirs(out)
    assert len(runs) == 2 and {s["status"] for s in runs.values()} == {"finished"}
    assert all("warm start" in (out / "logs" / f"{name}.log").read_text() for name in runs)
    for name in runs:
        (debug,) = (out / name).glob("wandb/offline-run-*/logs/debug.log")
        assert "Connected to an existing wandb-core service" in debug.read_text()
    assert all(p.proc.returncode is not None for p in [*workers, *services])  # ended at the end
