"""A Label Studio project's label config, read for what CAP answers: which tag, on which image.

Pure: the XML text in, a `Target` out, or a `ClientError` whose sentence
says what to add. As label-studio-ml-backend's `get_first_tag_occurence`
reads it: the first `BrushLabels` tag whose `toName` names an `Image` tag
(the first such name in `toName`), else the first `PolygonLabels` tag so
placed. The task's image is in its data under the `Image` tag's `value`,
less its `$`.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree

from server.errors import invalid

BRUSH, POLYGON = "brushlabels", "polygonlabels"  # the region types CAP answers with
_CONTROL_TYPES = {"brushlabels": BRUSH, "polygonlabels": POLYGON}
# A labeling config is a few kilobytes; a larger one is refused before the XML parser reads it.
MAX_LABEL_CONFIG_CHARS = 256 * 1024


@dataclasses.dataclass(frozen=True)
class Target:
    from_name: str  # the BrushLabels (or PolygonLabels) tag's name
    to_name: str  # the Image tag's name
    data_key: str  # where the task's data holds the image's URL
    region_type: str  # BRUSH or POLYGON


def read_label_config(text: object) -> Target:
    """The tag CAP's regions go to; a config without one is an `invalid_request` saying what to add."""
    if not isinstance(text, str) or not text.strip():
        raise invalid("The request has no label_config: Label Studio sends the project's labeling config; send it as a string.")
    if len(text) > MAX_LABEL_CONFIG_CHARS:
        raise invalid(f"The label_config is longer than {MAX_LABEL_CONFIG_CHARS:,} characters: send the project's own config.")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise invalid(f"The label_config is not well-formed XML ({exc}): fix the project's labeling config.") from None
    images = {
        tag.get("name"): tag.get("value", "").lstrip("$")
        for tag in root.iter()
        if tag.tag.lower() == "image" and tag.get("name") and tag.get("value")
    }
    for wanted in (BRUSH, POLYGON):
        for tag in root.iter():
            if _CONTROL_TYPES.get(tag.tag.lower()) != wanted or not tag.get("name"):
                continue
            for to_name in tag.get("toName", "").split(","):
                if to_name in images:
                    return Target(tag.get("name"), to_name, images[to_name], wanted)
    raise invalid(
        "The label_config has no BrushLabels or PolygonLabels tag on an Image tag: add one, for example "
        '<BrushLabels name="tag" toName="image">, with the same labels as the smart KeyPointLabels and RectangleLabels.'
    )
