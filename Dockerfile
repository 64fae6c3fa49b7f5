# kpi-engine serve in a container (docs/serve.md). The project is mounted at /project:
#   docker build -t kpi-engine .
#   docker run -p 8000:8000 -v "$PWD/examples/marketing:/project:ro" \
#       -e KPI_ENGINE_TOKENS_FILE=/run/secrets/kpi-tokens -v "$PWD/tokens.yaml:/run/secrets/kpi-tokens:ro" kpi-engine
# Without tokens it refuses to listen on 0.0.0.0 unless KPI_ENGINE_ALLOW_OPEN=1.
FROM python:3.12-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY kpi_engine ./kpi_engine
COPY definitions ./definitions
RUN pip install --no-cache-dir '.[serve]' && useradd --system --no-create-home kpi-engine

USER kpi-engine
ENV KPI_ENGINE_HOST=0.0.0.0 KPI_ENGINE_PORT=8000
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["kpi-engine", "serve", "/project"]
