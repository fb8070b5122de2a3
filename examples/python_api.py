"""Generate, chat and stream with the Python API on the embedded default model.

    python examples/python_api.py
"""

from engine import LLM, SamplingParams


def main() -> None:
    llm = LLM()  # the embedded SmolLM2-135M-Instruct; pass a path, .gguf file or org/name for others

    # Raw completion, greedy.
    out = llm.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=12))[0]
    print(f"completion: {out.text!r} ({len(out.token_ids)} tokens, finish={out.finish_reason})")

    # Several prompts at once, each with its own sampling parameters; seeds make sampling reproducible.
    prompts = ["Write a haiku about the sea.", "Name three colours:"]
    params = [SamplingParams(temperature=0.7, seed=1, max_tokens=30), SamplingParams(temperature=0, max_tokens=16)]
    for result in llm.generate(prompts, params):
        print(f"batch: {result.text!r}")

    # A chat turn through the model's own chat template, stopping at a stop string.
    messages = [{"role": "user", "content": "What is the Model Context Protocol? Answer in one sentence."}]
    reply = llm.chat(messages, SamplingParams(temperature=0, max_tokens=60, stop=["\n\n"]))[0]
    print(f"chat: {reply.text!r}")

    # Streaming: text arrives chunk by chunk; the last chunk says why it ended.
    print("stream: ", end="")
    for chunk in llm.stream_chat(messages, SamplingParams(temperature=0, max_tokens=40)):
        print(chunk.text, end="", flush=True)
        if chunk.finished:
            print(f"  [finish={chunk.finish_reason}]")


if __name__ == "__main__":
    main()
