"""A working MRML scene without the Slicer application, from the ``slicer-core`` wheel.

Used by the tests and the command line tool. In Slicer itself use ``slicer.mrmlScene`` and
``slicer.modules.<name>.logic()`` instead. The set-up follows what the Slicer application does
for these logics (``qSlicerCoreApplication`` / ``qSlicerAbstractModule::setup``): a default
crosshair node, an application logic with its colour logic's default colour nodes and empty
slice / view logic collections, then each module logic gets the scene and the application logic.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import slicer
import vtk

__all__ = ["HeadlessScene", "createHeadlessScene", "createTrackingLogic"]

_MODULE_LOGICS = (
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("Sequences", "vtkSlicerSequencesLogic"),
    ("Markups", "vtkSlicerMarkupsLogic"),
    ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("Data", "vtkSlicerDataModuleLogic"),
)


@dataclasses.dataclass
class HeadlessScene:
    """A scene with its application logic and module logics (``logics["Segmentations"]`` ...)."""

    scene: Any
    applicationLogic: Any
    logics: dict[str, Any]

    @property
    def segmentationsLogic(self):
        return self.logics["Segmentations"]

    @property
    def markupsLogic(self):
        return self.logics["Markups"]

    @property
    def sequencesLogic(self):
        return self.logics["Sequences"]

    @property
    def volumesLogic(self):
        return self.logics["Volumes"]


def createHeadlessScene() -> HeadlessScene:
    """A new ``vtkMRMLScene`` with Volumes, Segmentations, Sequences, Markups, SubjectHierarchy and
    Data module logics, as the Slicer application would set them up (no Qt, no rendering).

    Raises:
        ImportError: ``slicer-core`` is not installed (``pip install slicer-core``).
    """
    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetName("default")
    crosshair.SetSingletonTag("default")
    scene.AddNode(crosshair)
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    appLogic.GetColorLogic().SetMRMLScene(scene)
    appLogic.GetColorLogic().AddDefaultColorNodes()
    appLogic.SetSliceLogics(vtk.vtkCollection())
    appLogic.SetViewLogics(vtk.vtkCollection())
    logics = {}
    for name, className in _MODULE_LOGICS:
        logic = getattr(slicer, className)()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(appLogic)
        appLogic.SetModuleLogic(name, logic)
        logics[name] = logic
    return HeadlessScene(scene, appLogic, logics)


def createTrackingLogic(headless: HeadlessScene | None = None, **options):
    """A ``SAM2STrackingLogic`` on ``headless`` (a new headless scene when None); ``options`` go to it.

    The logic keeps the ``HeadlessScene`` as ``logic.headless`` (its module logics must outlive
    the scene's use). Keep the ``HeadlessScene`` yourself when you create one: dropping it while
    using its scene crashes slicer-core.
    """
    from .logic import SAM2STrackingLogic

    headless = headless or createHeadlessScene()
    logic = SAM2STrackingLogic(
        headless.scene,
        segmentationsLogic=headless.segmentationsLogic,
        markupsLogic=headless.markupsLogic,
        sequencesLogic=headless.sequencesLogic,
        volumesLogic=headless.volumesLogic,
        **options,
    )
    # The module logics observe the scene: they must live as long as it does (a scene whose
    # logics were garbage-collected crashes on the next node it adds).
    logic.headless = headless
    return logic
