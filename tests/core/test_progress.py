import pytest

from geoml_plugin.core.errors import GeoMLError, InputError, JobCancelled
from geoml_plugin.core.progress import Feedback


def test_sub_feedback_maps_onto_parent_range():
    seen = []
    fb = Feedback(lambda f, m: seen.append((round(f, 3), m)))
    child = fb.sub(0.5, 1.0).sub(0.0, 0.5)
    child.progress(0.5, "half of the first half of the second half")
    assert seen == [(0.625, "half of the first half of the second half")]


def test_progress_raises_when_cancelled():
    flag = {"c": False}
    fb = Feedback(is_cancelled=lambda: flag["c"])
    fb.progress(0.1)
    flag["c"] = True
    with pytest.raises(JobCancelled):
        fb.sub(0, 0.5).progress(0.2)


def test_error_messages_are_for_people():
    e = InputError("The raster has 3 bands.", "Choose a 4-band raster.")
    assert str(e) == "The raster has 3 bands. Choose a 4-band raster."
    assert isinstance(JobCancelled(), GeoMLError)
