"""The one task lifecycle (gui/task_controller.py) that the job dialogs, both panels and the installer use:
progress and the end reach the widget on the main thread; a failure is a clear message, never a traceback;
Cancel stops the job or lets it go; a widget closed while its task runs is never called again."""
from __future__ import annotations

import threading
import time

import pytest
from qgis.PyQt.QtWidgets import QProgressBar

from geoml_plugin import tasks
from geoml_plugin.core.errors import INTERNAL_ERROR, InputError, JobCancelled
from geoml_plugin.gui.task_controller import TaskController, current_task_property, failure_text


class Recorder:
    """Every callback of one run: what it got and on which thread it ran."""

    def __init__(self):
        self.calls: list = []
        self.threads: set = set()

    def __call__(self, name):
        def callback(arg):
            self.calls.append((name, arg))
            self.threads.add(threading.current_thread())
        return callback

    def names(self):
        return [name for name, _ in self.calls]

    def callbacks(self):
        return {key: self(key[3:]) for key in ("on_progress", "on_message", "on_finished", "on_failed",
                                               "on_cancelled", "on_error", "on_detached")}


def wait_ended(qtbot, task, timeout=30_000):
    """Until QGIS's task manager has let go of ``task`` (its finished() ran on the main thread)."""
    qtbot.waitUntil(lambda: task not in tasks._running, timeout=timeout)
    qtbot.wait(50)  # queued progress signals; pytest-qt fails the test on an exception in a callback


def test_progress_and_the_result_reach_the_widget_on_the_main_thread(qgis_app, qtbot):
    runner, rec = TaskController(), Recorder()
    job_threads = []

    def job(fb):
        job_threads.append(threading.current_thread())
        fb.progress(0.5, "half way")
        time.sleep(0.2)  # the queued progress is delivered before the end
        return 42

    task = runner.start(job, "GeoML: test job", **rec.callbacks())
    assert runner.task is task and runner.is_running
    wait_ended(qtbot, task)
    assert not runner.is_running and runner.task is None
    assert ("progress", 50.0) in rec.calls and ("message", "half way") in rec.calls
    assert rec.names()[-1] == "finished" and rec.calls[-1][1] is task and task.result == 42
    assert "failed" not in rec.names() and "cancelled" not in rec.names()
    assert job_threads and job_threads[0] is not threading.main_thread()
    assert rec.threads == {threading.main_thread()}


@pytest.mark.parametrize("error,expected", [
    (ValueError("no such band"), f"{INTERNAL_ERROR}: ValueError: no such band."),
    (InputError("Click points of at least two classes."), "Click points of at least two classes."),
])
def test_a_failed_job_ends_in_on_failed_with_a_clear_message(qgis_app, qtbot, error, expected):
    runner, rec = TaskController(), Recorder()

    def job(fb):
        raise error

    task = runner.start(job, "GeoML: failing job", **rec.callbacks())
    wait_ended(qtbot, task)
    assert rec.names() == ["failed"] and rec.calls[0][1] is task and not runner.is_running
    assert task.error_text().startswith(expected) and "Traceback" not in task.error_text()


def test_an_exception_while_showing_the_result_is_a_message_not_an_escaped_traceback(qgis_app, qtbot):
    runner, errors = TaskController(), []

    def show(task):
        raise RuntimeError("the layer tree is gone")

    task = runner.start(lambda fb: 1, "GeoML: test job", on_finished=show, on_error=errors.append)
    wait_ended(qtbot, task)  # before (dialogs without try/except): QGIS's Python error dialog
    assert len(errors) == 1 and str(errors[0]) == "the layer tree is gone" and not runner.is_running
    assert failure_text("Showing the result", errors[0]) == (
        "Showing the result failed: the layer tree is gone (details in the GeoML message log).")
    assert failure_text("Showing the result", InputError("Choose a raster.")) == "Choose a raster."
    # without on_error it goes to the log only: still nothing escapes
    task = runner.start(lambda fb: 1, "GeoML: test job", on_finished=show)
    wait_ended(qtbot, task)
    assert not runner.is_running


def test_cancel_stops_the_job_at_its_next_step_and_is_no_failure(qgis_app, qtbot):
    runner, rec = TaskController(), Recorder()
    started = threading.Event()

    def job(fb):
        started.set()
        for i in range(1000):
            fb.progress(i / 1000)
            time.sleep(0.01)
        return "finished"

    task = runner.start(job, "GeoML: cancelled job", **rec.callbacks())
    ends = []
    task.taskCompleted.connect(lambda: ends.append("complete"))
    task.taskTerminated.connect(lambda: ends.append("terminated"))
    assert started.wait(10)
    assert runner.cancel()
    wait_ended(qtbot, task)
    assert [name for name in rec.names() if name != "progress"] == ["cancelled"]
    assert isinstance(task.error, JobCancelled) and task.result is None and not task.detached
    assert ends == ["complete"]  # QGIS does not announce "Task failed"
    assert not runner.cancel()  # nothing runs any more


def test_a_job_still_running_after_the_release_time_is_let_go_of(qgis_app, qtbot):
    """A long step (a large block of a map) keeps on after Cancel: the widget hears 'cancelled' at the release
    time and never again; the job ends in the background, and on_detached (needing no widget) hears its end."""
    runner, rec = TaskController(), Recorder()
    started, finish = threading.Event(), threading.Event()

    def long_step(fb):
        started.set()
        finish.wait(20)  # one step that does not check for a cancel
        return "written anyway"

    task = runner.start(long_step, "GeoML: long step", **rec.callbacks())
    assert started.wait(10)
    t0 = time.monotonic()
    runner.cancel(release_ms=300)
    qtbot.waitUntil(lambda: "cancelled" in rec.names(), timeout=3_000)
    assert time.monotonic() - t0 < 2.0
    assert rec.names() == ["cancelled"] and task.detached and not runner.is_running and task in runner.released
    finish.set()
    wait_ended(qtbot, task)
    assert rec.names() == ["cancelled", "detached"] and rec.calls[1][1] is task and task.result == "written anyway"
    assert runner.released == set()


def test_detach_while_running_never_touches_the_deleted_widget(qgis_app, qtbot):
    """The widget is closed and deleted while its task runs on: neither its progress nor its end reach it."""
    from qgis.PyQt import sip

    runner, rec = TaskController(), Recorder()
    bar = QProgressBar()
    touched = []

    def on_progress(p):
        touched.append(p)
        bar.setValue(int(p))  # a deleted widget: RuntimeError, which pytest-qt would report

    go = threading.Event()

    def job(fb):
        fb.progress(0.1, "started")
        go.wait(20)
        fb.done()  # progress after the widget is gone
        return "result"

    task = runner.start(job, "GeoML: detached job", on_progress=on_progress, on_message=rec("message"),
                        on_finished=lambda t: bar.setValue(100), on_failed=rec("failed"),
                        on_cancelled=rec("cancelled"), on_detached=rec("detached"))
    qtbot.waitUntil(lambda: bool(touched), timeout=10_000)
    runner.detach()
    sip.delete(bar)
    seen = len(touched)
    go.set()
    wait_ended(qtbot, task)
    assert len(touched) == seen and [n for n in rec.names() if n != "message"] == ["detached"]
    assert rec.calls[-1][1] is task and task.result == "result" and not runner.is_running


def test_plugin_unload_detaches_the_task_and_the_widget_becomes_idle(qgis_app, qtbot):
    runner, rec = TaskController(), Recorder()
    started = threading.Event()

    def job(fb):
        started.set()
        for i in range(1000):
            fb.progress(i / 1000)
            time.sleep(0.01)

    task = runner.start(job, "GeoML: job at unload", **rec.callbacks())
    assert started.wait(10)
    tasks.cancel_all()  # what GeoMLPlugin.unload does before deleting the dialogs
    wait_ended(qtbot, task)
    assert [n for n in rec.names() if n != "progress"] == ["detached"] and not runner.is_running


def test_a_superseded_task_is_heard_no_more(qgis_app, qtbot):
    """Pressing Run again (the few-shot panel re-adapts): the older task's progress and end are dropped."""
    runner, old, new = TaskController(), Recorder(), Recorder()
    go = threading.Event()

    def slow(fb):
        go.wait(20)
        fb.done("old done")
        return "old"

    first = runner.start(slow, "GeoML: old", **old.callbacks())
    second = runner.start(lambda fb: "new", "GeoML: new", **new.callbacks())
    wait_ended(qtbot, second)
    go.set()
    wait_ended(qtbot, first)
    assert old.calls == [] and new.names() == ["finished"] and new.calls[0][1].result == "new"


def test_the_widget_task_attribute_is_the_controllers_current_task(qgis_app):
    class Widget:
        task = current_task_property()

        def __init__(self):
            self.runner = TaskController()

    w = Widget()
    assert w.task is None
    marker = object()
    w.task = marker  # e.g. a test standing in a running task
    assert w.runner.task is marker and w.runner.is_running
    w.task = None
    assert not w.runner.is_running
