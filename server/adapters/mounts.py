"""Which adapter answers under which path, on which port (docs/adapters.md).

Each adapter speaks one tool's API and hands the work to a `Segmenter`
(server/adapters/calls.py).
"""

from __future__ import annotations

import functools

from server import data_urls, image_source
from server.adapters.calls import Segmenter
from server.adapters.cvat import CvatAdapter
from server.adapters.label_studio import PREFIX as LABEL_STUDIO_PREFIX
from server.adapters.label_studio import LabelStudioAdapter
from server.adapters.segmenter import QueueSegmenter
from server.adapters.x_anylabeling import PREFIX as X_ANYLABELING_PREFIX
from server.adapters.x_anylabeling import XAnyLabelingAdapter
from server.budget import PixelBudget
from server.config import Settings
from server.connection_slots import ConnectionSlots
from server.front import Front, Handler, PortServer
from server.intake import Intake


def fronts(
    settings: Settings, intake: Intake, budget: PixelBudget, slots: ConnectionSlots
) -> tuple[QueueSegmenter, Front, PortServer | None]:
    """The segmenter, the main port's front, and CVAT_PORT's server when it is set."""
    segmenter = QueueSegmenter(
        intake,
        read_bytes=functools.partial(image_source.from_bytes, settings=settings, budget=budget),
        read_trusted=functools.partial(image_source.from_trusted, settings=settings, budget=budget),
    )
    # As much as a WebSocket message may carry: the request, and one image as a data: URL.
    max_body = settings.max_message_bytes + data_urls.data_url_max_chars(settings.max_image_bytes)
    main = Front(main_port(settings, segmenter), max_body=max_body, send_timeout=settings.send_timeout, slots=slots)
    if not settings.cvat_port:
        return segmenter, main, None
    cvat = Front(cvat_port(settings, segmenter), max_body=max_body, send_timeout=settings.send_timeout)
    return segmenter, main, PortServer(cvat, settings.host, settings.cvat_port, settings.max_connections)


def main_port(settings: Settings, segmenter: Segmenter) -> dict[str, Handler]:
    """The adapters on the main port, by path prefix."""
    return {
        LABEL_STUDIO_PREFIX: LabelStudioAdapter(settings, segmenter).handle,
        X_ANYLABELING_PREFIX + "/": XAnyLabelingAdapter(settings, segmenter, settings.sam_model_type).handle,
    }


def cvat_port(settings: Settings, segmenter: Segmenter) -> dict[str, Handler]:
    """CVAT's routes, on CVAT_PORT only: all of it is the nuclio dashboard's API."""
    return {"/": CvatAdapter(settings, segmenter, settings.sam_model_type).handle}
