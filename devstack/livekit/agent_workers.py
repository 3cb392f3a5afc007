"""The `/agent` worker protocol (livekit-agents' AgentServer/Worker) and job dispatch.

What one livekit-server node does (livekit-server's AgentHandler.JobRequest and
selectWorkerWeightedByLoad): workers register (RegisterWorkerResponse is the first server
message), report status/load, and get jobs: AvailabilityRequest -> AvailabilityResponse ->
JobAssignment{job, token}. The worker is picked at random weighted by spare capacity
(1 - load) among workers whose last status is WS_AVAILABLE for the dispatch's agent name;
one that declines (it is full or draining) or does not answer is left out and the next is
picked, until none is left. A worker's status changes only when its update carries one
(the field is optional); its load with every update. Draining workers report WS_FULL.
Jobs end with JobTermination when their room closes or their dispatch is deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from livekit.protocol import agent as proto_agent
from livekit.protocol import agent_dispatch as proto_dispatch

from . import auth
from .rooms import Room, new_id, server_info

if TYPE_CHECKING:
    from .server import LocalLiveKitServer

logger = logging.getLogger("devstack.livekit.agents")

AVAILABILITY_TIMEOUT = 10.0  # livekit-server's AssignJobTimeout
AGENT_NAME_ATTRIBUTE = "lk.agent.name"


class Worker:
    def __init__(self, ws: web.WebSocketResponse, reg: proto_agent.RegisterWorkerRequest) -> None:
        self.id = new_id("AW_")
        self.ws = ws
        self.agent_name = reg.agent_name
        self.namespace = reg.namespace
        self.job_type = reg.type
        self.version = reg.version
        self.permissions = reg.allowed_permissions if reg.HasField("allowed_permissions") else None
        self.status = proto_agent.WS_AVAILABLE
        self.load = 0.0
        self.job_count = 0
        self.draining = False
        self.jobs: dict[str, proto_agent.Job] = {}
        self.pending: dict[str, asyncio.Future] = {}
        self._send_lock = asyncio.Lock()
        self.closed = False

    @property
    def available(self) -> bool:
        return not self.closed and not self.draining and self.status == proto_agent.WS_AVAILABLE

    async def send(self, msg: proto_agent.ServerMessage) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(msg.SerializeToString())

    def __repr__(self) -> str:
        return f"<Worker {self.id} agent_name={self.agent_name!r} load={self.load:.2f}>"


class WorkerRegistry:
    """Implements rooms.AgentDispatcher."""

    def __init__(self, server: "LocalLiveKitServer") -> None:
        self.server = server
        self.workers: dict[str, Worker] = {}
        self._tasks: set[asyncio.Task] = set()
        self._registered = asyncio.Condition()

    # ----------------------------------------------------------- dispatch ---
    def launch_room_job(self, room: Room, dispatch: proto_dispatch.AgentDispatch) -> None:
        t = asyncio.get_running_loop().create_task(self._launch(room, dispatch))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _candidates(self, agent_name: str, exclude: set[str]) -> list[Worker]:
        return [
            w for w in self.workers.values()
            if w.agent_name == agent_name and w.job_type == proto_agent.JT_ROOM
            and w.available and w.id not in exclude
        ]

    def _select(self, agent_name: str, exclude: set[str]) -> Worker | None:
        ws = self._candidates(agent_name, exclude)
        if not ws:
            return None
        weights = [max(0.0, 1.0 - w.load) for w in ws]
        if sum(weights) <= 0:
            # all report load >= 1 yet WS_AVAILABLE (a dev-mode worker on a saturated
            # CPU does): livekit-server selects by status alone, so they still get jobs
            return random.choice(ws)
        return random.choices(ws, weights=weights)[0]

    async def _launch(self, room: Room, dispatch: proto_dispatch.AgentDispatch) -> None:
        job = proto_agent.Job(
            id=new_id("AJ_"),
            dispatch_id=dispatch.id,
            type=proto_agent.JT_ROOM,
            room=room.to_proto(),
            metadata=dispatch.metadata,
            agent_name=dispatch.agent_name,
            attributes=dict(dispatch.attributes),
            state=proto_agent.JobState(status=proto_agent.JS_PENDING, updated_at=time.time_ns()),
        )
        tried: set[str] = set()
        while not room.closed and dispatch.id in room.dispatches:
            w = self._select(dispatch.agent_name, tried)
            if w is None:
                if not tried:
                    logger.info("no worker for agent %r; room %s runs without it",
                                dispatch.agent_name, room.name)
                else:
                    logger.warning("no worker accepted job %s (agent %r)", job.id, dispatch.agent_name)
                return
            tried.add(w.id)
            try:
                if await self._assign(w, room, job):
                    return
            except Exception:
                logger.warning("assigning job %s to %s failed", job.id, w.id, exc_info=True)

    async def _assign(self, w: Worker, room: Room, job: proto_agent.Job) -> bool:
        now = time.time_ns()
        job.state.worker_id = w.id
        job.state.updated_at = now
        job.state.started_at = now
        job.state.status = proto_agent.JS_RUNNING
        fut = asyncio.get_running_loop().create_future()
        w.pending[job.id] = fut
        try:
            await w.send(proto_agent.ServerMessage(availability=proto_agent.AvailabilityRequest(job=job)))
            res: proto_agent.AvailabilityResponse = await asyncio.wait_for(fut, AVAILABILITY_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("worker %s did not answer availability for job %s", w.id, job.id)
            return False
        finally:
            w.pending.pop(job.id, None)
        if res.terminate:
            job.state.status = proto_agent.JS_SUCCESS
            job.state.ended_at = time.time_ns()
            return True
        if not res.available:
            return False
        identity = res.participant_identity or f"agent-{job.id}"
        job.state.participant_identity = identity
        attributes = dict(res.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = w.agent_name
        token = auth.mint_agent_token(
            self.server.api_key,
            self.server.api_secret,
            room=room.name,
            identity=identity,
            name=res.participant_name,
            metadata=res.participant_metadata,
            attributes=attributes,
            permission=w.permissions,
        )
        if room.closed:
            return True
        w.jobs[job.id] = job
        self.server.manager.record_job(room, job)
        # empty url: the worker joins through the URL it registered with
        await w.send(proto_agent.ServerMessage(assignment=proto_agent.JobAssignment(job=job, token=token)))
        logger.info("job %s (agent %r) assigned to %s for room %s", job.id, job.agent_name, w.id, room.name)
        return True

    async def terminate_job(self, job_id: str) -> None:
        for w in self.workers.values():
            job = w.jobs.pop(job_id, None)
            if job is None:
                continue
            job.state.status = proto_agent.JS_SUCCESS
            job.state.ended_at = time.time_ns()
            try:
                await w.send(proto_agent.ServerMessage(termination=proto_agent.JobTermination(job_id=job_id)))
            except Exception:
                logger.debug("termination to %s failed", w.id, exc_info=True)

    async def wait_for_worker(self, agent_name: str = "", timeout: float = 10.0) -> Worker:
        """For tests and tools: wait until a worker for `agent_name` registered."""
        async def _wait() -> Worker:
            async with self._registered:
                while True:
                    ws = [w for w in self.workers.values() if w.agent_name == agent_name and not w.closed]
                    if ws:
                        return ws[0]
                    await self._registered.wait()
        return await asyncio.wait_for(_wait(), timeout)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for w in list(self.workers.values()):
            w.closed = True
            try:
                await w.ws.close()
            except Exception:
                pass
        self.workers.clear()

    # --------------------------------------------------------- connection ---
    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            token = auth.token_from_request(request.headers, request.query)
            if not token:
                raise auth.AuthError(401, auth.PERMISSION_DENIED)
            claims = auth.verify_token(token, self.server.config.keys)
            if claims.video is None or not claims.video.agent:
                raise auth.AuthError(401, auth.PERMISSION_DENIED)
        except auth.AuthError as e:
            return web.Response(status=e.status, text=e.message)

        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        worker: Worker | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                wm = proto_agent.WorkerMessage()
                try:
                    wm.ParseFromString(msg.data)
                except Exception:
                    continue
                which = wm.WhichOneof("message")
                if worker is None:
                    if which != "register":
                        logger.warning("worker sent %s before register", which)
                        continue
                    worker = Worker(ws, wm.register)
                    await worker.send(proto_agent.ServerMessage(register=proto_agent.RegisterWorkerResponse(
                        worker_id=worker.id, server_info=server_info(self.server.node_id))))
                    async with self._registered:
                        self.workers[worker.id] = worker
                        self._registered.notify_all()
                    logger.info("worker %s registered (agent_name=%r)", worker.id, worker.agent_name)
                    continue
                await self._on_message(worker, which, wm)
        finally:
            if worker is not None:
                worker.closed = True
                self.workers.pop(worker.id, None)
                for fut in worker.pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("worker disconnected"))
                logger.info("worker %s disconnected", worker.id)
        return ws

    async def _on_message(self, w: Worker, which: str, wm: proto_agent.WorkerMessage) -> None:
        if which == "availability":
            fut = w.pending.get(wm.availability.job_id)
            if fut is not None and not fut.done():
                fut.set_result(wm.availability)
        elif which == "update_worker":
            u = wm.update_worker
            if u.HasField("status"):  # optional: an update without one keeps the last
                w.status = u.status
            w.load = u.load
            w.job_count = u.job_count
            w.draining = u.draining
        elif which == "update_job":
            u = wm.update_job
            job = w.jobs.get(u.job_id)
            if job is None:
                found = self.server.manager.find_job(u.job_id)
                job = found[1] if found else None
            if job is not None:
                job.state.status = u.status
                job.state.error = u.error
                job.state.updated_at = time.time_ns()
                if u.status in (proto_agent.JS_SUCCESS, proto_agent.JS_FAILED, proto_agent.JS_CANCELLED):
                    job.state.ended_at = time.time_ns()
                    w.jobs.pop(u.job_id, None)
        elif which == "ping":
            await w.send(proto_agent.ServerMessage(pong=proto_agent.WorkerPong(
                last_timestamp=wm.ping.timestamp, timestamp=int(time.time() * 1000))))
        else:
            # migrate_job / simulate_job: not needed by a single dev node
            logger.debug("worker %s: ignoring %s", w.id, which)


def setup(app: web.Application, server: "LocalLiveKitServer") -> None:
    app.router.add_get("/agent", server.workers.handle)
