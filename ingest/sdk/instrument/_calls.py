"""Wrappers for a client's call methods, sync and async, streamed or not.

The wrapper gives the app exactly what the original gives: the same object (a stream stays the
client's own Stream, its iterator replaced by one that watches the chunks go by), the same
exception, raised from the same place. Our own failures are logged, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from llmwatch.ingest.sdk.instrument._recorder import Call, Converter, Recorder, error_text, recorded_elsewhere

log = logging.getLogger("llmwatch.instrument")


@dataclass(frozen=True, slots=True)
class Api:
    """One call method of one client, and how to read it."""

    provider: str
    operation: str  # "chat", "responses", "messages"
    convert: Converter  # runs on the emitter's thread
    copy_fields: tuple[str, ...]  # request arguments the app may mutate after the call: shallow-copied
    is_token: Callable[[Any], bool]  # a stream item carrying the first output (time to first token)
    # Adjusts the request before it is sent; True if the stream will carry items only we asked for,
    # which is_ours recognises and the app never sees.
    prepare: Callable[[dict[str, Any]], bool] | None = None
    is_ours: Callable[[Any], bool] | None = None


def begin(recorder: Recorder, api: Api, kwargs: dict[str, Any]) -> tuple[Call, bool]:
    """Start recording a call about to be made with `kwargs` (adjusted in place: a routed model,
    a stream's usage asked for). Returns the call and whether the stream carries items of ours."""
    if recorder.route_model and "model" in kwargs:
        kwargs["model"] = recorder.routed_model(kwargs["model"])
    hide = api.prepare(kwargs) if api.prepare is not None and kwargs.get("stream") is True else False
    request = dict(kwargs)
    for name in api.copy_fields:  # what the app may still change after the call: its own lists
        value = request.get(name)
        if isinstance(value, (list, tuple)):
            request[name] = list(value)
    return recorder.start(api.provider, api.operation, kwargs.get("model"), request), hide


def sync_call(recorder: Recorder, api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def call_and_record(self: Any, *args: Any, **kwargs: Any) -> Any:
            if recorded_elsewhere():
                return original(self, *args, **kwargs)
            try:
                call, hide = begin(recorder, api, kwargs)
            except Exception:
                log.exception("llmwatch could not start recording a %s call", api.provider)
                return original(self, *args, **kwargs)
            try:
                result = original(self, *args, **kwargs)
            except BaseException as exc:
                failed(recorder, api, call, exc)
                raise
            return returned(recorder, api, call, result, hide, is_async=False)

        return call_and_record

    return make


def async_call(recorder: Recorder, api: Api) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        async def call_and_record(self: Any, *args: Any, **kwargs: Any) -> Any:
            if recorded_elsewhere():
                return await original(self, *args, **kwargs)
            try:
                call, hide = begin(recorder, api, kwargs)
            except Exception:
                log.exception("llmwatch could not start recording a %s call", api.provider)
                return await original(self, *args, **kwargs)
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                failed(recorder, api, call, exc)
                raise
            return returned(recorder, api, call, result, hide, is_async=True)

        return call_and_record

    return make


def failed(recorder: Recorder, api: Api, call: Call, exc: BaseException) -> None:
    """The call raised: record it with the error (the caller re-raises)."""
    try:
        call.error = error_text(exc)
        finished(recorder, api, call)
    except Exception:
        log.exception("llmwatch could not record a failed %s call", api.provider)


def finished(recorder: Recorder, api: Api, call: Call, result: Any = None) -> None:
    """The call (or its stream) is over: time it and hand it to the emitter."""
    call.finish()
    if result is not None:
        call.result = result
    recorder.emit(call, api.convert)


def observed(api: Api, call: Call, item: Any, hide: bool) -> bool:
    """Record one stream item; False for an item only we asked for, which the app must not see."""
    call.chunks.append(item)
    if call.ttft_ms is None and api.is_token(item):
        call.first_token()
    return not (hide and api.is_ours is not None and api.is_ours(item))


def returned(recorder: Recorder, api: Api, call: Call, result: Any, hide: bool, *, is_async: bool) -> Any:
    """The call returned: record it now, or, for a stream, as the app reads it."""
    try:
        if call.request.get("stream") is True and hasattr(result, "_iterator"):
            # The client's own Stream object stays what the app gets; only its item source is ours.
            call.streamed = True
            watch = _watch_async if is_async else _watch_sync
            result.__dict__["_iterator"] = watch(result._iterator, recorder, api, call, hide)
        else:
            finished(recorder, api, call, result)
    except Exception:
        log.exception("llmwatch could not record a %s call", api.provider)
    return result


def _watch_sync(items: Iterator[Any], recorder: Recorder, api: Api, call: Call, hide: bool) -> Iterator[Any]:
    try:
        for item in items:
            if observed(api, call, item, hide):
                yield item
    except GeneratorExit:
        call.complete = False  # the app stopped reading (or dropped the stream)
        raise
    except BaseException as exc:
        call.error = error_text(exc)
        raise
    finally:
        finished(recorder, api, call)


async def _watch_async(items: AsyncIterator[Any], recorder: Recorder, api: Api, call: Call,
                       hide: bool) -> AsyncIterator[Any]:
    try:
        async for item in items:
            if observed(api, call, item, hide):
                yield item
    except GeneratorExit:
        call.complete = False
        raise
    except BaseException as exc:
        call.error = error_text(exc)
        raise
    finally:
        finished(recorder, api, call)
