"""The page of ``sam2s web`` (Vuetify 3 widgets of trame): a drawer of cards (video, segments, prompts,
propagate, export, review), the status line, the remote-rendered slice view and the frame bar.

Only layout: the widgets bind the app's state variables (``video_path``, ``segments``, ``frame`` ...)
and call the app's public methods; the app registers the triggers the page fires (``sam2s_key``,
``sam2s_color``, ``sam2s_rename``, ``sam2s_delete``, ...). ``app`` below is the
:class:`~.app.SAM2SWebApp` (not imported here: the app imports this module).
"""

from __future__ import annotations

from .i18n import tr as _

DRAWER_WIDTH = 360
"""Width of the drawer in pixels."""
KEYS_SCRIPT = (
    "window.addEventListener('keydown', (e) => { "
    "if (['INPUT', 'TEXTAREA'].includes(e.target.tagName)) return; "
    "if ([' ', 'ArrowLeft', 'ArrowRight'].includes(e.key)) e.preventDefault(); "
    "trigger('sam2s_key', [e.key, e.shiftKey]); })"
)
"""The page's key handler: keys outside text fields go to the app (``sam2s_key``: key, Shift)."""


def buildPage(app):
    """Build the page of ``app`` on its server; returns trame's ``SinglePageWithDrawerLayout``."""
    from trame.ui.vuetify3 import SinglePageWithDrawerLayout
    from trame.widgets import client, html
    from trame.widgets import vuetify3 as v3

    with SinglePageWithDrawerLayout(app.server, full_height=True) as layout:
        layout.title.set_text("SAM2S")
        client.ClientTriggers(mounted=KEYS_SCRIPT)
        layout.footer.hide()
        with layout.toolbar:
            v3.VSpacer()
            html.Div("{{ status }}", classes="text-body-2 mx-4", id="sam2s-status")
        with layout.drawer as drawer:
            drawer.width = DRAWER_WIDTH
            drawerUi(app, v3, html)
        with layout.content:
            with html.Div(classes="d-flex flex-column", style="height: calc(100vh - 64px);"):
                with html.Div(style="flex: 1 1 auto; position: relative;", id="sam2s-view"):
                    app.layoutManager.initialize_layout_grid(layout)
                frameBarUi(v3, html)
    return layout


def drawerUi(app, v3, html) -> None:
    """The drawer's cards, top to bottom."""
    for card in (_videoCard, _segmentsCard, _promptsCard, _propagateCard, _exportCard, _reviewCard):
        card(app, v3, html)


def _videoCard(app, v3, html) -> None:
    """Open a video: a path on the server, or an upload."""
    with v3.VCard(flat=True, classes="pa-2"):
        v3.VCardSubtitle(_("Video"))
        v3.VTextField(
            v_model=("video_path",),
            label=_("Path on the server"),
            hint="{{ 'Under: ' + allowed_roots }}",
            density="compact",
            id="sam2s-path",
        )
        # The values shown go with the click (a v-model change may still be on its way to the server).
        v3.VBtn(_("Open"), click=(app.openVideo, "[video_path]"), id="sam2s-open", size="small")
        v3.VFileInput(
            v_model=("upload",),
            label=_("or upload a video"),
            density="compact",
            accept="video/*,.dcm",
            classes="mt-2",
        )
        html.Div("{{ video_name }}", classes="text-caption", id="sam2s-video-name")
        html.Div("{{ model_info }}", classes="text-caption", id="sam2s-model-info")


def _segmentsCard(app, v3, html) -> None:
    """The segments: colour, name, delete (triggers ``sam2s_color``, ``sam2s_rename``, ``sam2s_delete``), add."""
    with v3.VCard(flat=True, classes="pa-2", disabled=("!video_loaded",)):
        v3.VCardSubtitle(_("Segments"))
        with v3.VList(density="compact", id="sam2s-segments"):
            with v3.VListItem(
                v_for="seg in segments",
                key="seg.id",
                active=("seg.id === selected_segment",),
                click="selected_segment = seg.id",
            ):
                with html.Div(classes="d-flex align-center"):
                    html.Input(
                        type="color",
                        value=("seg.color",),
                        change="trigger('sam2s_color', [seg.id, $event.target.value])",
                        style="width: 28px; height: 22px; border: none;",
                        classes="sam2s-segment-color",
                    )
                    v3.VTextField(
                        model_value=("seg.name",),
                        update_modelValue="trigger('sam2s_rename', [seg.id, $event])",
                        density="compact",
                        hide_details=True,
                        variant="plain",
                        classes="mx-2 sam2s-segment-name",
                    )
                    v3.VBtn(
                        icon="mdi-delete",
                        size="x-small",
                        variant="text",
                        click="$event.stopPropagation(); trigger('sam2s_delete', [seg.id])",
                        classes="sam2s-delete-segment",
                    )
        v3.VBtn(_("Add segment"), click=app.addSegment, size="small", id="sam2s-add-segment")


def _promptsCard(app, v3, html) -> None:
    """The prompt tool (points or box), clearing the frame, the prompts of this frame, showing the masks."""
    with v3.VCard(flat=True, classes="pa-2", disabled=("!video_loaded",)):
        v3.VCardSubtitle(_("Prompts: click (Shift+click: negative)"))
        with v3.VBtnToggle(v_model=("tool",), mandatory=True, density="compact"):
            v3.VBtn(_("Points"), value="point", id="sam2s-tool-point")
            v3.VBtn(_("Box"), value="box", id="sam2s-tool-box")
        v3.VBtn(_("Clear frame"), click=app.clearFrame, size="small", classes="ml-2", id="sam2s-clear-frame")
        html.Div("{{ prompt_summary }}", classes="text-caption", id="sam2s-prompt-summary")
        v3.VSwitch(
            v_model=("show_masks",),
            label=_("Show masks (M)"),
            density="compact",
            hide_details=True,
            color="primary",
            id="sam2s-show-masks",
        )


def _propagateCard(app, v3, html) -> None:
    """Propagate: direction, segments, frame range, cancel, progress."""
    with v3.VCard(flat=True, classes="pa-2", disabled=("!video_loaded",)):
        v3.VCardSubtitle(_("Propagate"))
        v3.VSelect(
            v_model=("direction",),
            items=("['forward', 'backward', 'both']",),
            label=_("Direction"),
            density="compact",
            id="sam2s-direction",
        )
        v3.VSelect(
            v_model=("scope",),
            items=("['selected', 'changed', 'all']",),
            label=_("Segments"),
            density="compact",
        )
        v3.VRangeSlider(
            v_model=("frame_range",),
            min=0,
            max=("frame_count - 1",),
            step=1,
            label=_("Frames"),
            thumb_label=True,
            density="compact",
        )
        v3.VBtn(
            _("Propagate"),
            click=(app.propagate, "[direction, scope, frame_range, frame]"),
            disabled=("running",),
            id="sam2s-propagate",
            size="small",
        )
        v3.VBtn(_("Cancel"), click=app.cancel, disabled=("!running",), id="sam2s-cancel", size="small", classes="ml-2")
        v3.VProgressLinear(model_value=("progress",), classes="mt-2", height=6)
        html.Div("{{ progress_text }}", classes="text-caption", id="sam2s-progress")


def _exportCard(app, v3, html) -> None:
    """Export (.seg.nrrd, label PNGs, COCO) and the download links."""
    with v3.VCard(flat=True, classes="pa-2", disabled=("!video_loaded || running",)):
        v3.VCardSubtitle(_("Export"))
        v3.VBtn(".seg.nrrd", click=lambda: app.export("seg.nrrd"), size="small", id="sam2s-export-nrrd")
        v3.VBtn(_("Label PNGs"), click=lambda: app.export("png"), size="small", classes="ml-1", id="sam2s-export-png")
        v3.VBtn("COCO", click=lambda: app.export("coco"), size="small", classes="ml-1", id="sam2s-export-coco")
        with html.Div(classes="mt-1"):
            html.A(
                "{{ d.name }}",
                v_for="d in downloads",
                key="d.url",
                href=("d.url",),
                download=("d.name",),
                classes="d-block sam2s-download",
            )


def _reviewCard(app, v3, html) -> None:
    """Review: the frames to look at again; a click shows the frame."""
    with v3.VCard(flat=True, classes="pa-2", disabled=("!video_loaded || running",)):
        v3.VCardSubtitle(_("Review"))
        v3.VBtn(_("Find frames to review"), click=app.updateReview, size="small", id="sam2s-review")
        with v3.VList(density="compact", max_height=200, style="overflow-y: auto;", id="sam2s-review-list"):
            v3.VListItem(
                v_for="(r, i) in review",
                key="i",
                title=("`${r.frame}: ${r.name} ${r.reason}`",),
                subtitle=("r.detail",),
                click="frame = r.frame",
            )


def frameBarUi(v3, html) -> None:
    """Below the view: play / pause, the frame slider, the frame number and its time."""
    with html.Div(classes="d-flex align-center px-4", style="flex: 0 0 auto;"):
        v3.VBtn(
            icon=("playing ? 'mdi-pause' : 'mdi-play'",),
            click="playing = !playing",
            size="small",
            variant="text",
            disabled=("!video_loaded",),
            id="sam2s-play",
        )
        v3.VSlider(
            v_model=("frame",),
            min=0,
            max=("frame_count - 1",),
            step=1,
            hide_details=True,
            disabled=("!video_loaded",),
            classes="mx-4",
            id="sam2s-frame-slider",
        )
        html.Div(
            "{{ frame }} / {{ frame_count - 1 }}  {{ time_label }}",
            classes="text-body-2",
            style="white-space: pre; font-family: monospace;",
            id="sam2s-frame-label",
        )
