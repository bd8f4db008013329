"""Generate the extension and module icons (run from the repository root: python Resources/make_icons.py)."""

from PIL import Image, ImageDraw


def icon(size):
    s = size / 128
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([2 * s, 2 * s, 126 * s, 126 * s], radius=22 * s, fill=(24, 38, 58, 255))
    # endoscope view: a circular field of view
    d.ellipse([12 * s, 12 * s, 116 * s, 116 * s], fill=(120, 40, 40, 255))
    d.ellipse([20 * s, 20 * s, 108 * s, 108 * s], fill=(170, 70, 60, 255))
    # tracked object masks at three times (fading) along a path
    for cx, cy, a in ((38, 82, 90), (58, 66, 160), (80, 50, 255)):
        d.ellipse([(cx - 14) * s, (cy - 11) * s, (cx + 14) * s, (cy + 11) * s], fill=(60, 200, 120, a))
    d.line([38 * s, 82 * s, 58 * s, 66 * s, 80 * s, 50 * s], fill=(255, 255, 255, 230), width=max(1, int(3 * s)))
    # the click (positive prompt)
    d.ellipse(
        [(80 - 5) * s, (50 - 5) * s, (80 + 5) * s, (50 + 5) * s], fill=(255, 230, 60, 255), outline=(0, 0, 0, 255)
    )
    return img


icon(128).save("Resources/SAM2SSlicer.png")
icon(128).save("SAM2SSlicer/Resources/Icons/SAM2SSlicer.png")
icon(64).save("SAM2SSlicer/Resources/Icons/SegmentEditorSAM2S.png")
