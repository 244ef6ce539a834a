"""The SDK release resolver without a reachable bus: fallback, control messages, and the cache."""

from __future__ import annotations

import json
from pathlib import Path

from llmwatch import Release
from llmwatch.core.processes import free_port
from llmwatch.ingest.sdk.releases import ReleaseResolver

V7, V8 = Release("answer", "7", "m"), Release("answer", "8", "m")


def dead_bus() -> str:
    return f"127.0.0.1:{free_port()}"


def test_serves_the_fallback_while_the_bus_is_down_and_follows_control_messages(tmp_path: Path) -> None:
    cache = tmp_path / "releases.json"
    with ReleaseResolver(dead_bus(), {"bot": V8}, cache_path=cache) as resolver:
        assert resolver.release("bot") == V8
        assert resolver.release("other", V7) == V7 and resolver.release("other") == Release()
        assert not resolver.apply(b"not json") and not resolver.apply(b'{"kind": "other", "app": "bot"}')
        event = {"kind": "release", "app": "bot", "release": {"prompt_id": "answer", "prompt_version": "7", "model": "m"}}
        assert resolver.apply(json.dumps(event).encode())
        assert resolver.release("bot") == V7 and resolver.switches == 1
    # A restart while the bus is still down serves the last release seen, not the stale fallback.
    with ReleaseResolver(dead_bus(), {"bot": V8}, cache_path=cache) as restarted:
        assert restarted.release("bot") == V7
