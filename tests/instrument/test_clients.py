"""`llmwatch.instrument` on the real openai, anthropic, langchain and litellm packages, against a
local server speaking their wire formats: the app gets exactly what it would get without us, and
every call becomes one trace event."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import anthropic
import openai
import pytest

import llmwatch
from llmwatch import Release
from tests.instrument.conftest import RecordingEmitter
from tests.instrument.providers import REPLY, SLOW_S, USAGE, ProviderServer

HELLO = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of France?"}]


_open: list[Any] = []  # clients a test made, closed after it (an unclosed socket is a warning, so an error)


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while _open:
        _open.pop().close()


def openai_client(provider: ProviderServer, **options: Any) -> openai.OpenAI:
    _open.append(openai.OpenAI(base_url=provider.url + "/v1", api_key="test", max_retries=0, **options))
    return _open[-1]


def anthropic_client(provider: ProviderServer, **options: Any) -> anthropic.Anthropic:
    _open.append(anthropic.Anthropic(base_url=provider.url, api_key="test", max_retries=0, **options))
    return _open[-1]


def chunks_of(stream: Any) -> list[dict[str, Any]]:
    return [item.model_dump() for item in stream]


# --- what the app sees ------------------------------------------------------------------------


def test_the_app_gets_the_same_results_streams_and_exceptions(provider: ProviderServer) -> None:
    """Each call made once without and once with instrumentation: equal results, equal chunks."""
    def calls() -> list[Any]:
        client, claude = openai_client(provider), anthropic_client(provider)
        results: list[Any] = [
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO).model_dump(),
            chunks_of(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)),
            chunks_of(client.chat.completions.create(model="gpt-4o-mini-tools", messages=HELLO, stream=True)),
            client.responses.create(model="gpt-4.1", input="Capital of France?").output_text,
            chunks_of(client.responses.create(model="gpt-4.1", input="Capital?", stream=True)),
            claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO[1:]).model_dump(),
            chunks_of(claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO[1:], stream=True)),
        ]
        with claude.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HELLO[1:]) as helper:
            results.append([*helper.text_stream])
            results.append(helper.get_final_message().model_dump())
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
        results.append(type(stream))
        for model in ("error-429", "error-500"):
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model=model, messages=HELLO)
            results.append((type(raised.value), raised.value.status_code))
        return results

    without = calls()
    instrumentation = llmwatch.instrument(RecordingEmitter())
    try:
        with_us = calls()
    finally:
        instrumentation.uninstrument()
    for a, b in zip(without, with_us, strict=True):
        if isinstance(a, dict):
            a.pop("created", None), b.pop("created", None)
        assert a == b


def test_stream_usage_is_asked_for_but_the_extra_chunk_is_never_shown(provider: ProviderServer,
                                                                     recorded: RecordingEmitter) -> None:
    client = openai_client(provider)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    assert all(chunk.choices for chunk in chunks)  # an app indexing choices[0] never breaks
    assert provider.requests[-1][1]["stream_options"] == {"include_usage": True}
    (event,) = recorded.events()
    assert event["usage"] == {"input_tokens": USAGE["input"], "output_tokens": USAGE["output"],
                              "cached_input_tokens": USAGE["cached"]}
    # An app that asks for usage itself gets its usage chunk, as it would without us.
    options = {"include_usage": True}
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True,
                                                 stream_options=options))
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert recorded.events()[0]["usage"]["input_tokens"] == USAGE["input"]


def test_nothing_global_is_taken_over(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exporter))
    with app_provider.get_tracer("app").start_as_current_span("app-request"):
        openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert [s.name for s in exporter.get_finished_spans()] == ["app-request"]  # nothing of ours in the app's
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"  # the global one never set
    assert len(recorded.events()) == 1


# --- what is recorded ---------------------------------------------------------------------------


def test_a_chat_completion_becomes_one_event(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=HELLO, user="user-7")
    (event,) = recorded.events()
    assert event["app"] == "support-bot"
    assert event["release"] == {"model": "gpt-4o-mini", "provider": "openai"}
    assert event["input"] == HELLO
    assert event["output"] == REPLY
    assert event["user_id"] == "user-7"
    assert event["latency_ms"] > 0 and "ttft_ms" not in event and "error" not in event
    assert len(event["trace_id"]) == 32 and len(event["span_id"]) == 16


def test_streams_record_text_tool_calls_usage_and_time_to_first_token(provider: ProviderServer,
                                                                       recorded: RecordingEmitter) -> None:
    client, claude = openai_client(provider), anthropic_client(provider)
    for stream in (
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True),
        client.chat.completions.create(model="gpt-4o-mini-tools", messages=HELLO, stream=True),
        client.responses.create(model="gpt-4.1", input="Capital?", stream=True),
        claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO[1:], stream=True),
        claude.messages.create(model="claude-haiku-4-5-tools", max_tokens=64, messages=HELLO[1:], stream=True),
    ):
        for _ in stream:
            pass
    chat, chat_tools, responses, claude_text, claude_tools = recorded.events()
    for event in (chat, responses, claude_text):
        assert event["output"] == REPLY
        assert 0 < event["ttft_ms"] <= event["latency_ms"]
        assert event["tags"]["llm.stream"] == "complete"
    for event in (chat_tools, claude_tools):
        assert event["output"] == ""
        assert [(c["name"], c["arguments"]) for c in event["tool_calls"]] == [("get_weather", '{"city": "Paris"}')]
    assert claude_text["usage"] == {"input_tokens": USAGE["input"] + USAGE["cached"], "output_tokens": USAGE["output"],
                                    "cached_input_tokens": USAGE["cached"]}
    assert responses["usage"]["output_tokens"] == USAGE["output"]


def test_the_openai_stream_helpers_are_recorded(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    client = openai_client(provider)
    with client.chat.completions.stream(model="gpt-4o-mini", messages=HELLO) as chat:
        assert chat.get_final_completion().choices[0].message.content == REPLY
    with client.responses.stream(model="gpt-4.1", input="Capital?") as responses:
        assert responses.get_final_response().output_text == REPLY
    chat_event, responses_event = recorded.events()
    assert chat_event["output"] == responses_event["output"] == REPLY
    assert chat_event["usage"]["output_tokens"] == responses_event["usage"]["output_tokens"] == USAGE["output"]
    assert "ttft_ms" in chat_event and "ttft_ms" in responses_event


def test_the_anthropic_stream_helper_is_recorded(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    with anthropic_client(provider).messages.stream(model="claude-haiku-4-5", max_tokens=64,
                                                    messages=HELLO[1:]) as stream:
        assert "".join(stream.text_stream) == REPLY

    async def run() -> None:
        claude = anthropic.AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0)
        async with claude.messages.stream(model="claude-haiku-4-5-tools", max_tokens=64, messages=HELLO[1:]) as s:
            await s.get_final_message()
        with pytest.raises(anthropic.RateLimitError):
            async with claude.messages.stream(model="error-429", max_tokens=8, messages=HELLO[1:]):
                pass
        await claude.close()

    asyncio.run(run())
    text, tools, failed = recorded.events()
    assert text["output"] == REPLY and text["usage"]["output_tokens"] == USAGE["output"]
    assert 0 < text["ttft_ms"] <= text["latency_ms"] and text["tags"]["llm.stream"] == "complete"
    assert tools["tool_calls"][0]["name"] == "get_weather"
    assert failed["error"].startswith("RateLimitError 429")


def test_a_stream_the_app_abandons_is_recorded_as_such(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    stream = openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)
    for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    del stream, chunk  # the app drops it; openai's Stream is in a reference cycle with its generator:
    gc.collect()  # the event is emitted when the collector closes it
    (event,) = recorded.events()
    assert event["tags"]["llm.stream"] == "abandoned"
    assert REPLY.startswith(event["output"]) and event["output"] != REPLY


def test_errors_and_timeouts_are_recorded_and_reraised(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    client = openai_client(provider, timeout=0.3)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="error-429", messages=HELLO)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="error-500", messages=HELLO)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="slow", messages=HELLO)
    with pytest.raises(anthropic.RateLimitError):
        anthropic_client(provider).messages.create(model="error-429", max_tokens=8, messages=HELLO[1:])
    rate, server, timeout, claude = recorded.events()
    assert rate["error"].startswith("RateLimitError 429")
    assert server["error"].startswith("InternalServerError 500")
    assert timeout["error"].startswith("APITimeoutError") and timeout["latency_ms"] < SLOW_S * 1000
    assert claude["error"].startswith("RateLimitError 429")
    assert all(e["output"] == "" and e["input"] for e in (rate, server, timeout, claude))


def test_async_clients(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test", max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0)
        await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        async for _ in await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True):
            pass
        await client.responses.create(model="gpt-4.1", input="Capital?")
        await claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO[1:])
        async for _ in await claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO[1:],
                                                    stream=True):
            pass
        with pytest.raises(anthropic.InternalServerError):
            await claude.messages.create(model="error-500", max_tokens=8, messages=HELLO[1:])
        await client.close()
        await claude.close()

    asyncio.run(run())
    events = recorded.events()
    assert [e["output"] for e in events] == [REPLY] * 5 + [""]
    assert "ttft_ms" in events[1] and "ttft_ms" in events[4]
    assert events[5]["error"].startswith("InternalServerError 500")


def test_the_input_keeps_system_prompts_tool_calls_and_tool_results(provider: ProviderServer,
                                                                     recorded: RecordingEmitter) -> None:
    conversation = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "France"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
    ]
    openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=conversation)
    conversation.append({"role": "user", "content": "added after the call"})  # the app keeps its list
    anthropic_client(provider).messages.create(
        model="claude-haiku-4-5", max_tokens=64, system="Answer briefly.", messages=[
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "France"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Paris"}]},
        ])
    chat, claude = recorded.events()
    assert chat["input"][2:] == [{"role": "assistant", "content": '[tool call] lookup({"q": "France"})'},
                                 {"role": "tool", "content": "Paris"}]
    assert len(chat["input"]) == 4
    assert claude["input"] == [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": "Capital of France?"},
                               {"role": "assistant", "content": '[tool call] lookup({"q": "France"})'},
                               {"role": "user", "content": "Paris"}]


# --- releases, sessions, spans ------------------------------------------------------------------------


def test_the_release_is_set_per_app_per_call_or_by_the_resolver(provider: ProviderServer) -> None:
    from llmwatch.ingest.sdk.releases import ReleaseResolver

    emitter = RecordingEmitter()
    emitter.release = Release("answer", "7", "gpt-4o-mini")
    resolver = ReleaseResolver("127.0.0.1:9", fallback={"support-bot": Release("answer", "6", "gpt-4o")})
    client = openai_client(provider)
    try:
        instrumentation = llmwatch.instrument(emitter, only=["openai"])
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        with llmwatch.release(Release("answer", "8")):
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        instrumentation = llmwatch.instrument(emitter, only=["openai"], resolver=resolver, route_model=True)
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        instrumentation.uninstrument()
    finally:
        resolver.close()
    per_app, per_call, rolled_back = recorded_releases = [e["release"] for e in emitter.events()]
    assert per_app == {"prompt_id": "answer", "prompt_version": "7", "model": "gpt-4o-mini", "provider": "openai"}
    assert per_call == {"prompt_id": "answer", "prompt_version": "8", "model": "gpt-4o-mini", "provider": "openai"}
    # The resolver's release (the rollback target) labels the call, and route_model sends it there.
    assert rolled_back == {"prompt_id": "answer", "prompt_version": "6", "model": "gpt-4o", "provider": "openai"}
    assert provider.requests[-1][1]["model"] == "gpt-4o"
    assert len(recorded_releases) == 3


def test_spans_and_sessions_nest_calls_into_one_trace(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    with llmwatch.session("conv-42", user_id="u-7"), recorded.span("answer", kind="agent", input="q") as agent:
        with recorded.span("search", kind="retriever", input="capital of France") as search:
            search.output = ["Paris is the capital of France."]
        openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        agent.output = "done"
    search_span, call, agent_span = recorded.events()
    assert search_span["kind"] == agent_span["kind"] == "span"
    assert {e["trace_id"] for e in (search_span, call, agent_span)} == {agent.trace_id}
    assert search_span["parent_span_id"] == call["parent_span_id"] == agent_span["span_id"]
    assert "parent_span_id" not in agent_span
    assert all(e["session_id"] == "conv-42" and e["user_id"] == "u-7" for e in (search_span, call, agent_span))
    assert search_span["span_kind"] == "retriever" and search_span["output"] == ["Paris is the capital of France."]


def test_langchain_steps_become_spans_and_the_model_call_is_scored_once(provider: ProviderServer,
                                                                        recorded: RecordingEmitter) -> None:
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    model = ChatOpenAI(model="gpt-4o-mini", base_url=provider.url + "/v1", api_key="test", max_retries=0)
    _open.append(model.root_client)
    chain = RunnableLambda(lambda question: [("user", question)]) | model
    assert chain.invoke("Capital of France?").content == REPLY
    assert get_weather.invoke({"city": "Paris"}) == "sunny in Paris"
    events = recorded.events()
    llm_events = [e for e in events if e.get("kind") != "span"]
    spans = {e["name"]: e for e in events if e.get("kind") == "span"}
    (call,) = llm_events  # the openai client's event; ChatOpenAI's own step is a plain span
    assert call["output"] == REPLY and call["usage"]["input_tokens"] == USAGE["input"]
    assert spans["ChatOpenAI"]["span_kind"] == "llm"
    assert call["parent_span_id"] == spans["ChatOpenAI"]["span_id"]
    assert spans["ChatOpenAI"]["parent_span_id"] == spans["RunnableSequence"]["span_id"]
    assert spans["get_weather"]["span_kind"] == "tool" and spans["get_weather"]["output"] == "sunny in Paris"
    assert call["trace_id"] == spans["RunnableSequence"]["trace_id"] != spans["get_weather"]["trace_id"]
    with llmwatch.session("conv-9"):
        get_weather.invoke({"city": "Rome"})
    (tool_span,) = recorded.events()
    assert tool_span["session_id"] == "conv-9"  # LangChain's spans carry the session too


def test_a_langchain_model_without_an_instrumented_client_is_scored_itself(recorded: RecordingEmitter) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=[REPLY])
    with llmwatch.session("conv-9", user_id="u-1"):
        assert model.invoke("Capital of France?").content == REPLY
    (event,) = recorded.events()
    assert event.get("kind") != "span"
    assert event["input"] == [{"role": "user", "content": "Capital of France?"}]
    assert event["output"] == REPLY
    assert (event["session_id"], event["user_id"], event["tags"]["llm.operation"]) == ("conv-9", "u-1", "langchain")


def test_litellm_calls_are_recorded_once(provider: ProviderServer, recorded: RecordingEmitter) -> None:
    import litellm

    options = {"api_base": provider.url + "/v1", "api_key": "test", "messages": HELLO}
    response = litellm.completion(model="openai/gpt-4o-mini", **options)
    assert response.choices[0].message.content == REPLY
    chunks = list(litellm.completion(model="openai/gpt-4o-mini", stream=True, **options))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY  # every chunk has choices
    assert provider.requests[-1][1]["stream_options"] == {"include_usage": True}
    # A provider LiteLLM sends no stream_options to is not asked (LiteLLM would refuse the call).
    claude = litellm.completion(model="anthropic/claude-haiku-4-5", api_base=provider.url, api_key="test",
                                messages=HELLO[1:], max_tokens=64, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in claude) == REPLY
    assert provider.requests[-1][0] == "/v1/messages" and "stream_options" not in provider.requests[-1][1]

    async def run() -> str:
        response = await litellm.acompletion(model="openai/gpt-4o-mini", **options)
        return response.choices[0].message.content

    assert asyncio.run(run()) == REPLY
    events = recorded.events()
    assert [e["output"] for e in events] == [REPLY] * 4  # not once more by the openai client underneath
    assert [e["release"]["provider"] for e in events] == ["openai", "openai", "anthropic", "openai"]
    assert events[0]["usage"]["output_tokens"] == USAGE["output"]
    assert "ttft_ms" in events[1] and events[1]["usage"]["output_tokens"] == USAGE["output"]  # asked for, hidden


def test_only_and_uninstrument(provider: ProviderServer) -> None:
    emitter = RecordingEmitter()
    create = openai.resources.chat.completions.Completions.create
    with pytest.raises(ValueError, match="supported are"):
        llmwatch.instrument(emitter, only=["cohere"])
    instrumentation = llmwatch.instrument(emitter, only=["anthropic"])
    assert instrumentation.libraries == ["anthropic"]
    openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert emitter.events() == []
    instrumentation = llmwatch.instrument(emitter)
    assert openai.resources.chat.completions.Completions.create is not create
    instrumentation.uninstrument()
    assert openai.resources.chat.completions.Completions.create is create
    openai_client(provider).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert emitter.events() == []
