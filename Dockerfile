# syntax=docker/dockerfile:1
# Switchboard production image: one image, one entrypoint (`switchboard`); the compose
# services differ only by sub-command (worker, beat, slack, discord, db upgrade).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv -------------------
FROM ${PYTHON_IMAGE} AS build
# Optional private package mirror for air-gapped builds (build-time only, not in the image).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first: this layer is reused until pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p bot orchestrator tasks sandbox \
    && touch bot/__init__.py orchestrator/__init__.py tasks/__init__.py sandbox/__init__.py \
    && pip install . \
    && pip uninstall -y switchboard
COPY bot ./bot
COPY orchestrator ./orchestrator
COPY tasks ./tasks
COPY sandbox ./sandbox
# orchestrator/defaults/teams.yaml links to teams/default.yaml; the wheel build copies it in.
COPY teams ./teams
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv/lib

# --- runtime: the virtualenv, the team definitions, a non-root user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SWITCHBOARD_TEAMS_FILE=/app/teams/default.yaml \
    METRICS_PORT=9100 \
    LOG_JSON=true
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard --home-dir /app --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=switchboard:switchboard teams ./teams
USER 10001:10001
# 9100: /metrics of every process; 3000: Slack HTTP endpoint (events, commands, actions).
EXPOSE 9100 3000
ENTRYPOINT ["switchboard"]
CMD ["--help"]
