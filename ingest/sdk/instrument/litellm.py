"""LiteLLM: `litellm.completion` and `litellm.acompletion`, streamed or not.

LiteLLM answers in the OpenAI chat format whatever the provider, so its calls are read like
OpenAI chat completions. The provider client LiteLLM calls underneath (the `openai` package, for
OpenAI models) is not recorded a second time: the call is LiteLLM's.
"""

from __future__ import annotations

import logging
from typing import Any

from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import Call, Recorder, error_text, recording_elsewhere
from llmwatch.ingest.sdk.instrument.openai import chat_event, chat_token

__all__ = ["instrument"]

log = logging.getLogger("llmwatch.instrument")

def instrument(recorder: Recorder, patches: Patches) -> None:
    """Wrap the module functions and the stream class's iteration."""
    import litellm
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    originals = {name: getattr(litellm, name) for name in ("completion", "acompletion")}
    stream_methods = {name: CustomStreamWrapper.__dict__[name] for name in ("__next__", "__anext__")}

    def start(kwargs: dict[str, Any]) -> Call:
        model = str(kwargs.get("model") or "")
        provider, _, name = model.rpartition("/")
        request = {**kwargs, "messages": list(kwargs.get("messages") or ())}
        call = recorder.start(str(kwargs.get("custom_llm_provider") or provider or "litellm"), "chat", name or model,
                              request)
        call.release["model"] = name or model
        return call

    def done(call: Call, result: Any) -> Any:
        if _is_stream(call) and isinstance(result, CustomStreamWrapper):
            call.streamed = True
            result.__dict__["_llmwatch_call"] = call
        else:
            call.finish()
            call.result = result
            recorder.emit(call, chat_event)
        return result

    def completion(*args: Any, **kwargs: Any) -> Any:
        if "model" in kwargs:
            kwargs["model"] = recorder.routed_model(kwargs["model"])
        call = start(kwargs)
        try:
            with recording_elsewhere():
                result = originals["completion"](*args, **kwargs)
        except BaseException as exc:
            call.finish()
            call.error = error_text(exc)
            recorder.emit(call, chat_event)
            raise
        return done(call, result)

    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        if "model" in kwargs:
            kwargs["model"] = recorder.routed_model(kwargs["model"])
        call = start(kwargs)
        try:
            with recording_elsewhere():
                result = await originals["acompletion"](*args, **kwargs)
        except BaseException as exc:
            call.finish()
            call.error = error_text(exc)
            recorder.emit(call, chat_event)
            raise
        return done(call, result)

    def stream_next(self: Any) -> Any:
        call = self.__dict__.get("_llmwatch_call")
        if call is None:
            return stream_methods["__next__"](self)
        try:
            with recording_elsewhere():
                item = stream_methods["__next__"](self)
        except StopIteration:
            _finish_stream(recorder, self, call)
            raise
        except BaseException as exc:
            call.error = error_text(exc)
            _finish_stream(recorder, self, call)
            raise
        _observe(call, item)
        return item

    async def stream_anext(self: Any) -> Any:
        call = self.__dict__.get("_llmwatch_call")
        if call is None:
            return await stream_methods["__anext__"](self)
        try:
            with recording_elsewhere():
                item = await stream_methods["__anext__"](self)
        except StopAsyncIteration:
            _finish_stream(recorder, self, call)
            raise
        except BaseException as exc:
            call.error = error_text(exc)
            _finish_stream(recorder, self, call)
            raise
        _observe(call, item)
        return item

    patches.replace(litellm, "completion", completion)
    patches.replace(litellm, "acompletion", acompletion)
    patches.replace(CustomStreamWrapper, "__next__", stream_next)
    patches.replace(CustomStreamWrapper, "__anext__", stream_anext)


def _is_stream(call: Call) -> bool:
    return call.request.get("stream") is True


def _observe(call: Call, item: Any) -> None:
    call.chunks.append(item)
    if call.ttft_ms is None and chat_token(item):
        call.first_token()


def _finish_stream(recorder: Recorder, stream: Any, call: Call) -> None:
    if stream.__dict__.pop("_llmwatch_call", None) is None:
        return  # already recorded
    call.finish()
    recorder.emit(call, chat_event)
