"""Shared plumbing for GeoML algorithms: feedback bridge, errors, common params."""
from __future__ import annotations

import functools
import os
import traceback
from typing import Any, Callable

from qgis.core import (
    Qgis,
    QgsMessageLog,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
)
from qgis.PyQt import sip
from qgis.PyQt.QtGui import QIcon

from ..core.device import DEVICE_CHOICES
from ..core.errors import DependencyError, GeoMLError, internal_error_message
from ..core.progress import Feedback
from ..paths import icon_path

DEVICE_HELP = "<b>Device</b>: auto uses a CUDA GPU when one is available."


def qgis_feedback(feedback: QgsProcessingFeedback) -> Feedback:
    """Adapt Processing's feedback to the core protocol."""

    def on_progress(fraction: float, text: str) -> None:
        feedback.setProgress(fraction * 100.0)
        if text:
            feedback.setProgressText(text)

    return Feedback(on_progress, feedback.pushInfo, feedback.isCanceled)


class _StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Applies the style a job saved beside its raster to the layer Processing loads on completion:
    Processing loads result layers without their default (.qml) style."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802
        from ..styling import apply_style

        apply_style(layer)
        layer.triggerRepaint()


_POST_PROCESSORS: list = []  # their Python side: without it C++ would call an empty interface


def prepare_loading(context, *paths) -> None:
    """Outputs at ``paths`` that Processing (toolbox, modeler, batch) loads into the project when the run ends:
    styled as they load; one the job did not write (a confidence raster of a regression model) is not loaded,
    so QGIS does not report it as a layer that was "not correctly generated"."""
    _POST_PROCESSORS[:] = [p for p in _POST_PROCESSORS if not sip.isdeleted(p)]
    unwritten = [p for p in paths if p and context.willLoadLayerOnCompletion(p) and not os.path.exists(p)]
    if unwritten:
        layers = context.layersToLoadOnCompletion()
        for p in unwritten:
            layers.pop(p, None)
        context.setLayersToLoadOnCompletion(layers)
    for path in paths:
        if path and context.willLoadLayerOnCompletion(path):
            # one per layer, owned by C++: the context deletes its layers' post-processors when it is destroyed
            processor = _StyleOnLoad()
            sip.transferto(processor, None)
            _POST_PROCESSORS.append(processor)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)


def last_line_of_defence(process: Callable) -> Callable:
    """Wrap an algorithm's ``processAlgorithm``: a GeoML error is shown as its message; any other exception
    (a bug, or a bad input no check caught) as "GeoML hit an internal error: <short cause>", with the traceback
    in the GeoML log and the algorithm's log, never as a bare Python traceback."""
    if getattr(process, "_geoml_guarded", False):
        return process

    @functools.wraps(process)
    def guarded(self, parameters, context, feedback):
        try:
            return process(self, parameters, context, feedback)
        except QgsProcessingException:
            raise
        except GeoMLError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - the point of a last line of defence
            details = traceback.format_exc()
            QgsMessageLog.logMessage(f"geoml:{self.name()} failed:\n{details}", "GeoML", Qgis.MessageLevel.Critical)
            if feedback is not None:
                feedback.pushDebugInfo(details)
            raise QgsProcessingException(internal_error_message(exc)) from exc

    guarded._geoml_guarded = True
    return guarded


class GeoMLAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY, GROUP, HELP and implement
    ``initAlgorithm`` and ``processAlgorithm``; the latter is wrapped by :func:`last_line_of_defence`
    when the subclass is defined."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "processAlgorithm" in cls.__dict__:
            cls.processAlgorithm = last_line_of_defence(cls.__dict__["processAlgorithm"])

    NAME = ""
    DISPLAY = ""
    GROUP = "Apply"
    HELP = ""
    # import torch on the main thread with Triton blocked before the job runs (see deps/torch_preload.py)
    PRELOAD_TORCH = False

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802
        return self.DISPLAY

    def group(self) -> str:
        return self.GROUP

    def groupId(self) -> str:  # noqa: N802
        return self.GROUP.lower().replace(" ", "_")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.HELP

    def icon(self) -> QIcon:
        return QIcon(icon_path("geoml.svg"))

    def createInstance(self):  # noqa: N802
        return type(self)()

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        # runs on the main thread, before processAlgorithm runs in a background thread
        from ..thread_settings import configure_from_qgis

        configure_from_qgis()  # the setting geoml/threads as it is now (core/threads.py)
        if self.PRELOAD_TORCH:
            from ..deps.torch_preload import preload_torch

            preload_torch()
        return True

    def input_raster(self, parameters, context, name: str = "INPUT", what: str = "input raster"):
        """The raster layer of parameter ``name``; a Processing error "The <what> could not be loaded." when
        there is none (a source QGIS cannot open, a layer id no longer in the project)."""
        return _loaded(self.parameterAsRasterLayer(parameters, name, context), what)

    def input_layer(self, parameters, context, name: str, what: str):
        """The map layer of parameter ``name``, as :meth:`input_raster` for any layer type."""
        return _loaded(self.parameterAsLayer(parameters, name, context), what)

    def add_advanced_parameters(self, *params) -> None:
        """Add parameters folded under "Advanced parameters" in the algorithm dialog."""
        for p in params:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(p)

    def add_device_parameter(self) -> None:
        self.addParameter(
            QgsProcessingParameterEnum(
                "DEVICE", "Compute device", options=list(DEVICE_CHOICES), defaultValue=0, allowMultiple=False
            )
        )

    def device(self, parameters, context) -> str:
        return DEVICE_CHOICES[self.parameterAsEnum(parameters, "DEVICE", context)]

    def run_job(self, feedback: QgsProcessingFeedback, job: Callable[[Feedback], Any], needs_torch: bool = True) -> Any:
        """Run a core job; GeoML errors become clean Processing errors.

        Missing or broken torch/torchvision/safetensors is reported before the
        job starts (when it can be known without importing them) with the
        menu entry that installs them. ``needs_torch`` False (applying an ONNX
        model with onnxruntime) skips that check: the job says itself what it lacks.
        """
        from ..deps import detect

        problem = detect.quick_problem() if needs_torch else None
        if problem:
            raise QgsProcessingException(dependency_message(problem))
        try:
            return job(qgis_feedback(feedback))
        except DependencyError as exc:
            detect.invalidate()
            raise QgsProcessingException(dependency_message(exc.message)) from exc
        except GeoMLError as exc:
            raise QgsProcessingException(str(exc)) from exc


def _loaded(layer, what: str):
    if layer is None:
        raise QgsProcessingException(f"The {what} could not be loaded.")
    return layer


def dependency_message(problem: str) -> str:
    from ..deps.detect import DIAGNOSTICS_ACTION, INSTALL_ACTION

    return (f"{problem} In QGIS, {INSTALL_ACTION} installs matching PyTorch, torchvision and safetensors into "
            f"GeoML's own folder (no administrator rights needed); {DIAGNOSTICS_ACTION} shows details.")
