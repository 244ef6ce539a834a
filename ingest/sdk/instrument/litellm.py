"""LiteLLM: `litellm.completion` and `litellm.acompletion`, streamed or not.

LiteLLM answers in the OpenAI chat format whatever the provider, so its calls are read like
OpenAI chat completions. The provider client LiteLLM calls underneath (the `openai` package, for
OpenAI models) is not recorded a second time: the call is LiteLLM's.
"""

from __future__ import annotations

import functools
from typing import Any

from llmwatch.ingest.sdk.instrument._calls import Api, failed, finished, observed
from llmwatch.ingest.sdk.instrument._patch import Patches
from llmwatch.ingest.sdk.instrument._recorder import Call, Recorder, error_text, recording_elsewhere
from llmwatch.ingest.sdk.instrument.openai import chat_api

__all__ = ["instrument"]


def instrument(recorder: Recorder, patches: Patches, *, stream_usage: bool = True) -> None:
    """Wrap the module functions and the stream class's iteration."""
    import litellm
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    api = chat_api(stream_usage=stream_usage)

    @functools.lru_cache(maxsize=1024)
    def takes_stream_options(model: str, provider: str | None) -> bool:
        """Whether LiteLLM passes `stream_options` on for this model: asking a provider that does
        not take it would make LiteLLM refuse the app's call."""
        try:
            _, provider, _, _ = litellm.get_llm_provider(model, custom_llm_provider=provider)
            return "stream_options" in (litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
                                        or ())
        except Exception:
            return False

    originals = {name: getattr(litellm, name) for name in ("completion", "acompletion")}
    stream_methods = {name: CustomStreamWrapper.__dict__[name] for name in ("__next__", "__anext__")}

    def start(kwargs: dict[str, Any]) -> tuple[Call, bool]:
        if "model" in kwargs:
            kwargs["model"] = recorder.routed_model(kwargs["model"])
        model = str(kwargs.get("model") or "")
        provider, _, name = model.rpartition("/")
        # Usage of a stream, as for OpenAI: asked for, and the extra chunk kept from the app.
        hide = (api.prepare is not None and kwargs.get("stream") is True
                and takes_stream_options(model, kwargs.get("custom_llm_provider")) and api.prepare(kwargs))
        request = {**kwargs, "messages": list(kwargs.get("messages") or ())}
        call = recorder.start(str(kwargs.get("custom_llm_provider") or provider or "litellm"), "chat", name or model,
                              request)
        return call, hide

    def done(call: Call, hide: bool, result: Any) -> Any:
        if call.request.get("stream") is True and isinstance(result, CustomStreamWrapper):
            call.streamed = True
            result.__dict__["_llmwatch_call"] = (call, hide)
        else:
            finished(recorder, api, call, result)
        return result

    def completion(*args: Any, **kwargs: Any) -> Any:
        call, hide = start(kwargs)
        try:
            with recording_elsewhere():
                result = originals["completion"](*args, **kwargs)
        except BaseException as exc:
            failed(recorder, api, call, exc)
            raise
        return done(call, hide, result)

    async def acompletion(*args: Any, **kwargs: Any) -> Any:
        call, hide = start(kwargs)
        try:
            with recording_elsewhere():
                result = await originals["acompletion"](*args, **kwargs)
        except BaseException as exc:
            failed(recorder, api, call, exc)
            raise
        return done(call, hide, result)

    def stream_next(self: Any) -> Any:
        watched = self.__dict__.get("_llmwatch_call")
        if watched is None:
            return stream_methods["__next__"](self)
        call, hide = watched
        while True:
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
            if observed(api, call, item, hide):
                return item

    async def stream_anext(self: Any) -> Any:
        watched = self.__dict__.get("_llmwatch_call")
        if watched is None:
            return await stream_methods["__anext__"](self)
        call, hide = watched
        while True:
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
            if observed(api, call, item, hide):
                return item

    patches.replace(litellm, "completion", completion)
    patches.replace(litellm, "acompletion", acompletion)
    patches.replace(CustomStreamWrapper, "__next__", stream_next)
    patches.replace(CustomStreamWrapper, "__anext__", stream_anext)


def _stream_over(recorder: Recorder, api: Api, stream: Any) -> None:
    watched = stream.__dict__.pop("_llmwatch_call", None)
    if watched is not None:  # else already recorded
        finished(recorder, api, watched[0])
