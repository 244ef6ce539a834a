"""LiteLLM: `litellm.completion` and `litellm.acompletion`, streamed or not.

LiteLLM answers in the OpenAI chat format whatever the provider, so its calls are read like
OpenAI chat completions. The provider client LiteLLM calls underneath (the `openai` package, for
OpenAI models) is not recorded a second time: the call is LiteLLM's.
"""

from __future__ import annotations

from typing import Any

from llmwatch.ingest.sdk.instrument._calls import Api, failed, finished, observed
from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import Call, Recorder, error_text, recording_elsewhere
from llmwatch.ingest.sdk.instrument.openai import chat_api

__all__ = ["instrument"]

def instrument(recorder: Recorder, patches: Patches) -> None:
    """Wrap the module functions and the stream class's iteration."""
    import litellm
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    api = chat_api(stream_usage=False)
    originals = {name: getattr(litellm, name) for name in ("completion", "acompletion")}
    stream_methods = {name: CustomStreamWrapper.__dict__[name] for name in ("__next__", "__anext__")}

    def start(kwargs: dict[str, Any]) -> Call:
        if "model" in kwargs:
            kwargs["model"] = recorder.routed_model(kwargs["model"])
        model = str(kwargs.get("model") or "")
        provider, _, name = model.rpartition("/")
        request = {**kwargs, "messages": list(kwargs.get("messages") or ())}
        return recorder.start(str(kwargs.get("custom_llm_provider") or provider or "litellm"), "chat", name or model,
                              request)

    def done(call: Call, result: Any) -> Any:
        if call.request.get("stream") is True and isinstance(result, CustomStreamWrapper):
            call.streamed = True
            result.__dict__["_llmwatch_call"] = call
        else:
            finished(recorder, api, call, result)
        return result

    def completion(*args: Any, **kwargs: Any) -> Any:
        call = start(kwargs)
        try:
            with recording_elsewhere():
                result = originals["completion"](*args, **kwargs)
        except BaseException as exc:
            failed(recorder, api, call, exc)
            raise
        return done(call, result)

    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        call = start(kwargs)
        try:
            with recording_elsewhere():
                result = await originals["acompletion"](*args, **kwargs)
        except BaseException as exc:
            failed(recorder, api, call, exc)
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
            _stream_over(recorder, api, self)
            raise
        except BaseException as exc:
            call.error = error_text(exc)
            _stream_over(recorder, api, self)
            raise
        observed(api, call, item, hide=False)
        return item

    async def stream_anext(self: Any) -> Any:
        call = self.__dict__.get("_llmwatch_call")
        if call is None:
            return await stream_methods["__anext__"](self)
        try:
            with recording_elsewhere():
                item = await stream_methods["__anext__"](self)
        except StopAsyncIteration:
            _stream_over(recorder, api, self)
            raise
        except BaseException as exc:
            call.error = error_text(exc)
            _stream_over(recorder, api, self)
            raise
        observed(api, call, item, hide=False)
        return item

    patches.replace(litellm, "completion", completion)
    patches.replace(litellm, "acompletion", acompletion)
    patches.replace(CustomStreamWrapper, "__next__", stream_next)
    patches.replace(CustomStreamWrapper, "__anext__", stream_anext)


def _stream_over(recorder: Recorder, api: Api, stream: Any) -> None:
    call = stream.__dict__.pop("_llmwatch_call", None)
    if call is not None:  # else already recorded
        finished(recorder, api, call)
