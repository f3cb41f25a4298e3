"""A session's video requests, on the connection side: admission, frames, results, the end (docs/protocol.md, "Video").

`Conversation` (server/connection.py) hands its video requests here. An
open's file is read (server/video_source.py) and handed over with its
record; a request on an open clip is checked against the clip this session
holds (`video_unknown` when it holds none by that hash) and the clip's
frames and size. Every record names this session (`session`) and this
replica (`preferredServer`): only this replica's processor takes it
(server/processor.py). When the session ends, its clips are freed.
"""

from __future__ import annotations

import uuid
from typing import Any

from server import answers, jobs, video_protocol, video_source
from server.clock import utcnow
from server.errors import ClientError
from server.intake import Intake
from server.request_job import RequestJob
from server.store import Record
from server.video_protocol import VideoRequest
from server.wakeups import Bell


class VideoRequests:
    def __init__(self, intake: Intake, scope: str | None):
        self.intake = intake
        self.scope = scope
        self.session = uuid.uuid4().hex  # the key of this session's clips on this replica
        self.urls: dict[str, str] = {}  # sha256 -> the URL its records keep, for the clips this session opened
        intake.video_sessions.begin(self.session)

    def admit(self, request: VideoRequest, bell: Bell) -> tuple[str, int, dict[str, Any]]:
        """Insert the request's record (and hand over an open's file): its id, its position, a log summary."""
        settings = self.intake.settings
        data = None
        if request.kind == "open":
            assert request.video_url is not None
            data, sha256, url = video_source.read(request.video_url, settings)
            self.urls[sha256] = url
            width = height = 0  # known once decoded: the processor writes them into the record
        else:
            assert request.video_sha256 is not None
            sha256 = request.video_sha256
            info = self.intake.video_sessions.describe(self.session, sha256)
            if info is None:
                raise ClientError("video_unknown", "This session has not opened that video (or has closed it): open it first.")
            request = video_protocol.fit(request, info["frames"], info["width"], info["height"])
            width, height, url = info["width"], info["height"], self.urls.get(sha256, f"sha256:{sha256}")
        job_id = str(uuid.uuid4())
        record = jobs.new_record(
            job_id,
            now=utcnow(),
            image_url=url,
            image_sha256=sha256,
            width=width,
            height=height,
            boxes=[],
            multimask=False,
            prompts=[prompt.to_dict() for prompt in request.prompts] or None,
            output=list(request.output),
            preferred_server=self.intake.server_id,
            scope=self.scope,
            waiter_lease_seconds=settings.waiter_lease_seconds,
        )
        record |= video_fields(request, self.session)
        position = self.intake.admit_video(record, data, bell)
        return job_id, position, {"video": request.kind, "sha256": sha256[:12]}

    def frames(self, job_id: str, client_ref: str | None) -> list[str]:
        """The `frame` messages of the frames propagated since the last call, in order."""
        return [answers.frame_message(job_id, frame, masks, client_ref) for frame, masks in self.intake.video_outbox.take(job_id)]

    def result(self, job: RequestJob, record: Record, client_ref: str | None) -> dict[str, Any]:
        """The processed record's result message, as a dict."""
        output, timings = job.output(record)
        return answers.video_result_fields(record["id"], record["imageSha256"], record["video"]["kind"], output, timings, client_ref)

    def close(self) -> None:
        """The session ended: its clips, and their share of the pixel budget, are freed."""
        self.intake.video_sessions.close_session(self.session)


def video_fields(request: VideoRequest, session: str) -> dict[str, Any]:
    """What a video record keeps beyond an image record's fields, in its `video` (docs/records.md)."""
    fields: dict[str, Any] = {"kind": request.kind, "session": session}
    if request.frame is not None:
        fields["frame"] = request.frame
    if request.remove_object is not None:
        fields["removeObject"] = request.remove_object
    if request.propagate is not None:
        fields["propagate"] = request.propagate.to_dict()
        fields["frame"] = request.propagate.start
    return {"video": fields}
