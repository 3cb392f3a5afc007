"""Video a test caller publishes, and what the model made of it."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from livekit import rtc
from PIL import Image

from .caller import Caller


class VideoTrack:
    """A published video track of one flat colour, sent at `fps` until stopped."""

    def __init__(self, caller: Caller, source, rgb: tuple[int, int, int], fps: float = 10.0) -> None:
        self.caller, self.source_kind, self.fps = caller, source, fps
        self.size = (160, 120)
        self.frame = np.zeros((self.size[1], self.size[0], 4), np.uint8)
        self.frame[..., :3], self.frame[..., 3] = rgb, 255
        self.video = rtc.VideoSource(*self.size)
        self.pub = None
        self.task: asyncio.Task | None = None

    async def start(self) -> VideoTrack:
        name = "screen" if self.source_kind == rtc.TrackSource.SOURCE_SCREENSHARE else "camera"
        track = rtc.LocalVideoTrack.create_video_track(name, self.video)
        self.pub = await self.caller.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=self.source_kind))
        self.task = asyncio.create_task(self._send())
        return self

    async def _send(self) -> None:
        while True:
            self.video.capture_frame(rtc.VideoFrame(*self.size, rtc.VideoBufferType.RGBA, self.frame.tobytes()))
            await asyncio.sleep(1 / self.fps)

    async def stop(self) -> None:
        self.task.cancel()
        await self.caller.room.local_participant.unpublish_track(self.pub.sid)


def colour(jpeg: bytes) -> str:
    """The dominant channel of a frame the model received."""
    r, g, b = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
    return max((r, "red"), (g, "green"), (b, "blue"))[1]
