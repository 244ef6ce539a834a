"""Time an instrumented LLM call adds on the app's thread, against the same call uninstrumented
(goal: the SDK's emit cost only, well under 1 % of a call). The real openai client, against the
local OpenAI-format server of the tests, with a real Emitter producing to a tansu broker.

Also measured, when installed: OpenInference's openai instrumentor (a maintained alternative) with
a private TracerProvider and a BatchSpanProcessor, so its spans are built but exported off-thread.

    .venv/bin/python bench/instrument.py [--calls 600]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import free_port, print_table, start_tansu, stop_process, write_json

import llmwatch
from llmwatch import Emitter
from tests.instrument.providers import ProviderServer

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of France?"}]


def one_call(client: Any, stream: bool) -> Callable[[], None]:
    def call() -> None:
        if stream:
            for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
                pass
        else:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    return call


def timed(call: Callable[[], None], n: int) -> tuple[list[float], list[float]]:
    """Wall and app-thread CPU microseconds per call."""
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.thread_time(), time.perf_counter()
        call()
        wall.append((time.perf_counter() - t0) * 1e6)
        cpu.append((time.thread_time() - c0) * 1e6)
    return wall, cpu


def wrapper_alone(emitter: Emitter, stream: bool, n: int = 20_000) -> tuple[float, float]:
    """Microseconds our wrapper adds around a call that returns at once (a prebuilt response,
    or a stream of prebuilt chunks), wall and app-thread CPU: the instrumentation's own cost,
    without network noise. Wall includes waiting for the GIL while the emitter's thread converts
    and produces the events."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from llmwatch.ingest.sdk.instrument._calls import sync_call
    from llmwatch.ingest.sdk.instrument._recorder import Recorder
    from llmwatch.ingest.sdk.instrument.openai import chat_api
    from tests.instrument.providers import _chat, _chat_chunks

    completion = ChatCompletion.model_validate(_chat("gpt-4o-mini", tools=False))
    chunks = [ChatCompletionChunk.model_validate(c) for _, c in _chat_chunks("gpt-4o-mini", False, {})[:-1]]

    class Stream:
        def __init__(self) -> None:
            self._iterator = iter(chunks)

        def __iter__(self) -> Any:
            yield from self._iterator

    def original(_self: Any, **kwargs: Any) -> Any:
        return Stream() if kwargs.get("stream") else completion

    wrapped = sync_call(Recorder(emitter), chat_api(stream_usage=False))(original)
    kwargs = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}

    def run(fn: Callable[..., Any]) -> tuple[float, float]:
        c0, t0 = time.thread_time(), time.perf_counter()
        for _ in range(n):
            result = fn(None, **kwargs)
            if stream:
                for _ in result:
                    pass
        return (time.perf_counter() - t0) / n * 1e6, (time.thread_time() - c0) / n * 1e6

    runs = []
    for _ in range(5):
        (wall, cpu), (wall0, cpu0) = run(wrapped), run(original)
        runs.append((wall - wall0, cpu - cpu0))
    emitter.flush(30)
    return min(w for w, _ in runs), min(c for _, c in runs)


def openinference(module: str, name: str) -> Callable[[], Callable[[], None]] | None:
    """An OpenInference instrumentor with a private TracerProvider and a batch span processor, so
    its spans are built on the app's thread and exported off it."""
    try:
        import importlib

        instrumentor = getattr(importlib.import_module(module), name)()
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))

    def on() -> Callable[[], None]:
        instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
        return instrumentor.uninstrument

    return on


def compare(call: Callable[[], None], variants: dict[str, Callable[[], Callable[[], None]]], calls: int,
            block: int) -> dict[str, dict[str, float]]:
    """Median wall and app-thread CPU per call of each variant, in interleaved blocks (the
    machine's drift hits all alike)."""
    timed(call, 50)  # warm up connections and imports
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
    for _ in range(calls // block):
        for name, on in variants.items():
            off = on()
            wall, cpu = timed(call, block)
            off()
            samples[name][0].extend(wall)
            samples[name][1].extend(cpu)
    return {name: {"wall_us": statistics.median(w), "cpu_us": statistics.median(c)} for name, (w, c) in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=600, help="calls per variant and mode")
    parser.add_argument("--block", type=int, default=50, help="calls in a row before switching variant")
    args = parser.parse_args()
    import openai

    port = free_port()
    broker = start_tansu(port)
    emitter = Emitter(f"127.0.0.1:{port}", app="bench")
    # Each variant switches itself on and returns what switches it off.
    plain: Callable[[], Callable[[], None]] = lambda: lambda: None  # noqa: E731
    results: dict[str, Any] = {}
    try:
        with ProviderServer() as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="bench", max_retries=0)
            openai_variants = {"plain": plain,
                               "llmwatch": lambda: llmwatch.instrument(emitter, only=["openai"]).uninstrument}
            if (other := openinference("openinference.instrumentation.openai", "OpenAIInstrumentor")) is not None:
                openai_variants["openinference"] = other
            for stream in (False, True):
                results["stream" if stream else "json"] = compare(one_call(client, stream), openai_variants,
                                                                  args.calls, args.block)
            from langchain_openai import ChatOpenAI

            model = ChatOpenAI(model="gpt-4o-mini", base_url=server.url + "/v1", api_key="bench", max_retries=0)
            chain_variants = {"plain": plain,
                              "llmwatch": lambda: llmwatch.instrument(emitter, only=["langchain", "openai"]).uninstrument}
            if (other := openinference("openinference.instrumentation.langchain", "LangChainInstrumentor")) is not None:
                chain_variants["openinference"] = other
            results["langchain"] = compare(lambda: model.invoke(MESSAGES), chain_variants, args.calls, args.block)
            emitter.flush(30)
            alone = {"json": wrapper_alone(emitter, stream=False), "stream": wrapper_alone(emitter, stream=True)}
            results["wrapper_alone_us"] = alone
    finally:
        emitter.close()
        stop_process(broker)
    rows = []
    for mode in ("json", "stream", "langchain"):
        by_variant = results[mode]
        base = by_variant["plain"]
        for name, m in by_variant.items():
            added_cpu = m["cpu_us"] - base["cpu_us"]
            rows.append([mode, name, f"{m['wall_us']:.0f}", f"{m['cpu_us']:.0f}", f"{added_cpu:+.0f}",
                         f"{m['wall_us'] / base['wall_us']:.3f}", f"{m['cpu_us'] / base['cpu_us']:.3f}"])
    print_table(f"app-thread cost per call, median of {args.calls} (local server: a call is ~1 ms, a real "
                "provider's is 300-3,000 ms); langchain: ChatOpenAI.invoke, llmwatch recording LangChain and openai",
                ["mode", "variant", "wall us", "app CPU us", "added CPU us", "wall ratio", "CPU ratio"], rows)
    print("\nllmwatch's wrapper alone, around a call that returns at once (best of 5 x 20,000), wall / app-thread CPU: "
          f"{alone['json'][0]:.1f} / {alone['json'][1]:.1f} us per call, "
          f"{alone['stream'][0]:.1f} / {alone['stream'][1]:.1f} us per 8-chunk stream")
    print(f"emitter: {emitter.stats()}")
    write_json("instrument", {"calls": args.calls, "results": results, "emitter": emitter.stats()})


if __name__ == "__main__":
    main()
