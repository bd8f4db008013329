"""The SAM2S Segment Editor effect (``SegmentEditorEffect.py``, registered by ``SAM2SSlicer.registerEffect``).

This file makes the folder a package so that Slicer's ``tr`` gives the effect's strings the
translation context ``SegmentEditorSAM2S.SegmentEditorEffect`` (``Base/Python/slicer/i18n.py``
``getContext``: the parent folder's name when it holds an ``__init__.py``), as Slicer's own
effects in ``SegmentEditorEffects`` have, instead of the generic ``SegmentEditorEffect``.
"""
