"""The HTTP server of ``crs serve-reward``: OpenRLHF's ``POST /get_reward`` and ``GET /health``, on aiohttp.

aiohttp's own body limit (``client_max_size``) bounds a request before it is read whole; the handler parses it
(:mod:`crs.serve.protocol`) and hands the items to one scoring thread, so the event loop keeps answering (health
checks, bad requests) while a batch is scored, and batches never run side by side on the accelerator. Every
refusal is a JSON body ``{"error": "...", "status": N}``: 400 for a malformed request, 413 for one too large, 500
for a scoring failure; none of them stops the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from crs.config import ConfigError, CRSConfig, ServeConfig
from crs.rl.combine import CombineError
from crs.runs import RunError
from crs.serve.protocol import RequestError, parse_reward_request, reward_response
from crs.serve.served_reward import ServedReward

logger = logging.getLogger(__name__)

REWARD_PATH = "/get_reward"
HEALTH_PATH = "/health"


class RewardHandler:
    """The two endpoints over one :class:`ServedReward`; scoring runs on one worker thread."""

    def __init__(self, served: ServedReward, settings: ServeConfig, subset: str = "") -> None:
        self.served, self.settings, self.subset = served, settings, subset
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crs-reward")

    async def get_reward(self, request: web.Request) -> web.Response:
        """``POST /get_reward``: score the request's items, or say why not."""
        try:
            body = await read_json(request, self.settings.max_request_mb)
            items = parse_reward_request(body, self.served.eos_texts, self.settings.max_items)
        except RequestError as err:
            return refusal(err.status, str(err))
        if not len(items):
            return web.json_response({"rewards": [], "scores": [], "extra_logs": {}})
        try:
            scores = await asyncio.get_running_loop().run_in_executor(self.executor, self.served, items)
        except (ConfigError, CombineError) as err:  # what this request's prompts cannot be scored with
            return refusal(400, str(err))
        except RunError as err:  # a reward source that failed, or non-finite rewards: crs's one-line errors
            return refusal(500, f"scoring failed: {type(err).__name__}: {err}")
        except Exception as err:  # anything else: said, logged with its traceback, and the server goes on
            logger.exception("scoring a request of %d items failed", len(items))
            return refusal(500, f"scoring failed: {type(err).__name__}: {err}")
        return web.json_response(reward_response(scores))

    async def health(self, request: web.Request) -> web.Response:
        """``GET /health``: the reward being served, and the request limits."""
        limits = {"max_items": self.settings.max_items, "max_request_mb": self.settings.max_request_mb}
        return web.json_response({"status": "ok", "subset": self.subset, **self.served.describe(), **limits})

    async def close(self, app: web.Application) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def read_json(request: web.Request, limit_mb: float) -> Any:
    """The request body as JSON, or a :class:`RequestError` (413 over ``limit_mb`` MiB, 400 not JSON)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        message = f"the body is over serve.max_request_mb ({limit_mb:g} MiB): send fewer items at once"
        raise RequestError(413, message) from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"the body is not JSON ({err})") from None


def refusal(status: int, message: str) -> web.Response:
    """A refused request: the reason in a JSON body, and in the server's log (OpenRLHF logs the status alone)."""
    logger.warning("HTTP %d: %s", status, message)
    return web.json_response({"error": message, "status": status}, status=status)


def reward_app(served: ServedReward, settings: ServeConfig, subset: str = "") -> web.Application:
    """The aiohttp application answering ``POST /get_reward`` and ``GET /health`` with ``served``."""
    app = web.Application(client_max_size=int(settings.max_request_mb * 2**20))
    handler = RewardHandler(served, settings, subset)
    app.router.add_post(REWARD_PATH, handler.get_reward)
    app.router.add_get(HEALTH_PATH, handler.health)
    app.on_cleanup.append(handler.close)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start ``app`` listening on ``host:port`` (0: a free port); the runner and the base URL it answers on."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


def serve_reward(cfg: CRSConfig) -> None:
    """``crs serve-reward``: load the subset's reward once, then answer requests until stopped (Ctrl-C)."""
    served = ServedReward.from_config(cfg)
    app = reward_app(served, cfg.serve, cfg.subset)

    async def forever() -> None:
        runner, url = await start_site(app, cfg.serve.host, cfg.serve.port)
        where = f"POST {url}{REWARD_PATH}, GET {url}{HEALTH_PATH}"
        logger.info("serving %s's reward (%s): %s", cfg.subset, served.reward.strategy_name, where)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(forever())
    except KeyboardInterrupt:
        logger.info("stopped")


class BackgroundServer:
    """A reward server on a thread of this process (tests, notebooks): ``url`` once started, ``stop()`` to end it."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app, self.host, self.port = app, host, port
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="crs-reward-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(start_site(self.app, self.host, self.port), self._loop)
        self._runner, self.url = started.result(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the server and its thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=60)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)


__all__ = ["BackgroundServer", "RewardHandler", "reward_app", "serve_reward", "start_site"]
