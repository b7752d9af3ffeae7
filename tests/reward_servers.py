"""A crs reward server started inside a test (127.0.0.1, a free port, a thread) and real HTTP requests to it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from crs.config import load_config
from crs.serve.app import BackgroundServer, reward_app
from crs.serve.served_reward import ServedReward

# No proxy: the requests go to this machine's loopback, whatever the environment says.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def write_config(path: Path, **subsets: dict[str, Any]) -> Path:
    """A config file holding ``subsets`` (and an empty ``default``)."""
    path.write_text(yaml.safe_dump({"default": {}, **subsets}))
    return path


@contextmanager
def reward_server(config: Path, subset: str, *overrides: str) -> Iterator[tuple[str, ServedReward]]:
    """``subset``'s reward served on 127.0.0.1 and a free port: (its base URL, the reward)."""
    cfg = load_config(subset, config, ["serve.host=127.0.0.1", "serve.port=0", *overrides])
    served = ServedReward.from_config(cfg)
    with BackgroundServer(reward_app(served, cfg.serve, subset), cfg.serve.host, cfg.serve.port) as server:
        yield server.url, served


def post(url: str, body: Any = None, raw: bytes | None = None, path: str = "/get_reward") -> tuple[int, Any]:
    """POST ``body`` as JSON (or ``raw`` bytes as they are): the status and the JSON answer."""
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    return _answer(request)


def get(url: str, path: str = "/health") -> tuple[int, Any]:
    """GET ``path``: the status and the JSON answer."""
    return _answer(urllib.request.Request(url + path))


def _answer(request: urllib.request.Request) -> tuple[int, Any]:
    try:
        with OPENER.open(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
