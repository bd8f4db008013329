"""No orphan tracking server (issue 23, item 1 and acceptance 2): the local server is started
through a launcher that behaves like PythonSlicer (CTKAppLauncher starts the real interpreter as its
child and forwards no signal), and no server process is alive 20 s after ``LocalServer.stop()``,
after a module reload (``SAM2SController.shutdown``, what the module's ``cleanup()`` calls) or
after SIGKILL of the application that started it (``sam2s.serving.supervise``); each start's work
folder (ready file, log) goes with its server (N23)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from sam2s.serving.supervise import process_alive

pytest.importorskip("fastapi")
if not Path("/proc/self/task").is_dir():
    pytest.skip("finding a launcher's child needs Linux's /proc", allow_module_level=True)

LAUNCHER = """#!{python}
# Like PythonSlicer (a CTKAppLauncher copy): runs the real interpreter as its child and forwards no signal.
import subprocess, sys
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("launcher") / "PythonSlicer"
    path.write_text(LAUNCHER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def child_of(pid: int) -> int:
    """The one child process of ``pid`` (the real interpreter under the launcher)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    raise AssertionError(f"process {pid} started no child")


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(process_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_stop_ends_the_launcher_and_the_server_it_runs(launcher):
    from SAM2SSlicerLib.backends import LocalServer

    local = LocalServer(python=str(launcher))
    local.ensureRunning()
    launcherPid = local.process.pid
    serverPid = child_of(launcherPid)
    try:
        local.process.send_signal(signal.SIGTERM)  # what stopping only the started process did
        local.process.wait(timeout=10)
        time.sleep(1.5)
        assert process_alive(serverPid), "the launcher model forwards no signal: the server must outlive it"
    finally:
        os.kill(serverPid, signal.SIGKILL)
    local = LocalServer(python=str(launcher))
    local.ensureRunning()
    launcherPid = local.process.pid
    serverPid = child_of(launcherPid)
    assert process_alive(serverPid) and process_alive(launcherPid)
    first = local.workFolder
    assert (first / "server.log").is_file()
    os.kill(serverPid, signal.SIGKILL)  # the server died (and its launcher with it): the next action starts one
    assert gone_within([serverPid], 20)
    local.process.wait(timeout=20)
    local.ensureRunning()
    launcherPid, serverPid, second = local.process.pid, child_of(local.process.pid), local.workFolder
    assert not first.exists() and second != first  # the dead server's ready file and log went with it (N23)
    local.stop()
    assert gone_within([launcherPid, serverPid], 20), "a server process outlived stop()"
    assert not second.exists() and local.workFolder is None
    local.stop()  # twice: nothing happens


@pytest.mark.slow
def test_the_server_ends_itself_when_the_application_is_killed(launcher):
    code = (
        "import sys, time\n"
        "from SAM2SSlicerLib.backends import LocalServer\n"
        f"local = LocalServer(python={str(launcher)!r})\n"
        "local.ensureRunning()\n"
        "print(local.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SAM2SSlicer"))
    app = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        launcherPid = int(app.stdout.readline())
        serverPid = child_of(launcherPid)
        assert process_alive(serverPid)
        app.kill()  # SIGKILL: no atexit, no stop()
        app.wait(timeout=10)
        assert gone_within([serverPid, launcherPid], 20), "the server outlived its application by 20 s"
    finally:
        if app.poll() is None:
            app.kill()


@pytest.mark.slow  # a server or launcher process: make test-fast leaves it to make test
def test_a_module_reload_stops_the_controllers_job_and_server(launcher, tmp_path):
    """A module reload (``slicer.util.reloadScriptedModule`` calls the widget's ``cleanup()``, which
    calls ``SAM2SController.shutdown``; N11) while a click's session is being made in the local
    server: the job is dropped, and no server process is alive 20 s later."""
    import numpy as np
    from SAM2SSlicerLib import headless
    from SAM2SSlicerLib.backends import LocalServer, ServerBackend
    from SAM2SSlicerLib.controller import JsonSettingsStore, SAM2SController
    from SAM2SSlicerLib.synthetic import SyntheticClip

    server = LocalServer(python=str(launcher))
    logic = headless.createTrackingLogic()
    controller = SAM2SController(
        logic,
        JsonSettingsStore(tmp_path / "s.json"),
        backendFactory=lambda url, token: ServerBackend(localServer=server),
    )
    controller.setCompute("local")
    clip = SyntheticClip(num_frames=4, height=32, width=48, num_objects=1, seed=1)
    controller.importVideo(np.stack([clip.get(t) for t in range(4)]))
    editor = logic.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    controller.createSegmentation(editor)
    controller.effectActivated(editor)
    assert controller.click((20.0, 15.0, 0), False, editor)
    while server.process is None or server.url is None:  # ticks until the server listens
        controller.runner.tick()
        time.sleep(0.05)
    launcherPid = server.process.pid
    serverPid = child_of(launcherPid)
    assert controller.runner.isRunning()
    controller.shutdown()  # what the module's cleanup() does on reload
    assert not controller.runner.isRunning()
    assert gone_within([launcherPid, serverPid], 20), "a server process outlived the module reload"
    controller.shutdown()  # twice: nothing happens
