# The control plane's image: every functions-framework target (FUNCTION_TARGET picks one) and the
# migration job (python -m functions.db.migrate). Build from the repository root:
#   docker build -f infra/docker/functions.Dockerfile -t REGISTRY/vwm-functions:TAG .
# It holds the packages the functions import (functions, eventing) and migrations/, which
# functions.db.migrate reads from beside the functions package; nothing of harness/ or vwm/.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY infra/docker/functions.requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin vwm

COPY eventing/ /app/eventing/
COPY functions/ /app/functions/
COPY migrations/ /app/migrations/
# Compiled once here: the image writes no bytecode (nor could user 1000 in /app), so without
# this every cold start compiles the project's modules again (bench/cold_start.py).
RUN python -m compileall -q /app/eventing /app/functions

USER 1000:1000
EXPOSE 8080
# functions-framework's ASGI app for the target in FUNCTION_TARGET (FUNCTION_SIGNATURE_TYPE too;
# the events Service adds --signature-type cloudevent), served by uvicorn in this one process
# (functions/serve.py), on PORT (Knative sets 8080). `functions-framework --asgi` with the same
# options serves the same app, through a gunicorn fork that costs every cold start ~100 ms.
ENTRYPOINT ["python", "-m", "functions.serve", "--source", "functions/main.py"]
