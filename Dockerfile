# The offline agent in a container. Build context: the repository root.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN scripts/setup.sh && .venv/bin/pip install -e ".[llm-server]"
ENV PATH=/app/.venv/bin:$PATH HF_HUB_OFFLINE=1
ENTRYPOINT ["voiceagent"]
CMD ["run", "examples/basic_agent.py", "--input", "examples/jfk.wav", "--output", "/out/agent.wav", "--events", "/out/events.jsonl"]
