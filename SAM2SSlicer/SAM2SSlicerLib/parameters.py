"""The module's parameter node: what the SAM2S panel works on, saved with the scene (N21).

Slicer keeps a scripted module's state in a singleton ``vtkMRMLScriptedModuleNode`` whose
singleton tag and ``ModuleName`` attribute are the module's name
(``Base/Python/slicer/ScriptedLoadableModule.py``, ``ScriptedLoadableModuleLogic.getParameterNode``
and ``createParameterNode``). It is a node of the scene, so it is written into ``.mrml`` / ``.mrb``
files and read back with them, and it survives a module reload. This module reads and writes it
without Qt (Slicer's ``parameterNodeWrapper`` needs the full application; slicer-core has no
``slicer.parameterNodeWrapper``):

* node references ``video`` (the tracked ``vtkMRMLVectorVolumeNode``) and ``segmentation`` (the
  ``vtkMRMLSegmentationNode`` written into);
* parameters ``firstFrame``, ``lastFrame`` (the inclusive propagation range, frame indices),
  ``scope`` (``controls.SCOPES``) and ``tool`` (``controls.TOOL_POINT`` / ``TOOL_BOX``).

Qt-free: plain MRML calls (works in Slicer and on PyPI ``slicer-core``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["MODULE_NAME", "TrackingParameters", "parameterNode", "readParameters", "writeParameters"]

MODULE_NAME = "SAM2SSlicer"
"""The module's name: the parameter node's singleton tag and ``ModuleName`` attribute."""

_VIDEO, _SEGMENTATION = "video", "segmentation"


@dataclasses.dataclass
class TrackingParameters:
    """What the panel works on. Nodes are MRML nodes of the scene or None; frames are 0-based
    indices into the video (inclusive range); ``scope`` and ``tool`` are ``controls`` names."""

    videoNode: Any = None
    segmentationNode: Any = None
    firstFrame: int = 0
    lastFrame: int = 0
    scope: str = "selected"
    tool: str = "point"


def parameterNode(scene, create: bool = True):
    """The module's ``vtkMRMLScriptedModuleNode`` in ``scene``, found by its singleton tag
    ``MODULE_NAME`` (made and added when missing and ``create``; None otherwise). Its
    ``ModuleName`` attribute is set again when a scene close removed it, as
    ``ScriptedLoadableModuleLogic.getParameterNode`` does."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None:
        if not create:
            return None
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # owned by the Python variable, as createParameterNode does
        node.SetSingletonTag(MODULE_NAME)
        node.SetName(MODULE_NAME)
        node.SetAttribute("ModuleName", MODULE_NAME)
        node = scene.AddNode(node)
    elif node.GetAttribute("ModuleName") != MODULE_NAME:
        node.SetAttribute("ModuleName", MODULE_NAME)
    return node


def writeParameters(scene, parameters: TrackingParameters) -> None:
    """Store ``parameters`` in the scene's parameter node (made when missing). Node references
    are by ID (``SetNodeReferenceID``), so they follow the nodes when the scene is saved and loaded."""
    node = parameterNode(scene)
    wasModifying = node.StartModify()
    try:
        for role, value in ((_VIDEO, parameters.videoNode), (_SEGMENTATION, parameters.segmentationNode)):
            node.SetNodeReferenceID(role, value.GetID() if value is not None else None)
        node.SetParameter("firstFrame", str(int(parameters.firstFrame)))
        node.SetParameter("lastFrame", str(int(parameters.lastFrame)))
        node.SetParameter("scope", str(parameters.scope))
        node.SetParameter("tool", str(parameters.tool))
    finally:
        node.EndModify(wasModifying)


def readParameters(scene) -> TrackingParameters | None:
    """The parameters stored in ``scene`` (None when it has no parameter node). A referenced node
    that is gone reads as None; a missing or malformed number reads as 0 and a missing name as
    the default: the caller checks them against the video (``SAM2SController.restoreParameters``)."""
    node = parameterNode(scene, create=False)
    if node is None:
        return None

    def number(name: str) -> int:
        try:
            return int(node.GetParameter(name) or 0)
        except ValueError:
            return 0

    defaults = TrackingParameters()
    return TrackingParameters(
        videoNode=node.GetNodeReference(_VIDEO),
        segmentationNode=node.GetNodeReference(_SEGMENTATION),
        firstFrame=number("firstFrame"),
        lastFrame=number("lastFrame"),
        scope=node.GetParameter("scope") or defaults.scope,
        tool=node.GetParameter("tool") or defaults.tool,
    )
