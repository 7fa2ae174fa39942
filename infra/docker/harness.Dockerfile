# A session's harness: `python -m harness` with the four agent CLIs at the versions of
# harness/clis/package.json (and npm, for other versions), git to clone and push, as the
# non-root uid 1000 that owns /workspace (the session's volume). The pod is the sandbox
# (VWM_SANDBOX=none: no bubblewrap).
# Build from the repository root:
#   docker build -f infra/docker/harness.Dockerfile -t REGISTRY/vwm-harness:TAG .
# The CLIs come from infra/docker/clis/package-lock.json (the lock of harness/clis/package.json);
# install scripts run only for the packages harness/clis/package.json allows (allowScripts).

FROM node:22.12.0-bookworm-slim AS clis
WORKDIR /opt/vwm/.tools/clis
COPY harness/clis/package.json ./package.json
COPY infra/docker/clis/package-lock.json ./package-lock.json
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm rebuild @anthropic-ai/claude-code opencode-ai \
    && npm cache clean --force

FROM python:3.11.11-slim-bookworm

# git clones and pushes the repositories (https and ssh); libstdc++ is what node links against.
# Debian keeps one version of each package per point release, so exact pins would break the
# build at the next security update; the base image's tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends ca-certificates git libstdc++6 openssh-client \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/vwm \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/vwm/.tools/clis/node_modules/.bin:$PATH \
    HOME=/home/vwm \
    VWM_HARNESS_HOST=0.0.0.0 \
    VWM_HARNESS_PORT=8080 \
    VWM_WORKSPACE=/workspace \
    VWM_SANDBOX=none

WORKDIR /opt/vwm

COPY infra/docker/harness.requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/vwm --shell /bin/bash vwm \
    && mkdir /workspace \
    && chown 1000:1000 /workspace

COPY --from=clis /usr/local/bin/node /usr/local/bin/node
COPY --from=clis /opt/vwm/.tools/clis /opt/vwm/.tools/clis
# npm, for a runtime that pins another CLI version than the one above: the harness installs it
# into the session's volume (harness/cli_install.py), from the registry NPM_CONFIG_REGISTRY or
# an .npmrc names.
COPY --from=clis /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
COPY eventing/ /opt/vwm/eventing/
COPY harness/ /opt/vwm/harness/
# Compiled once here, not at every start of a session's pod (the image writes no bytecode).
RUN python -m compileall -q /opt/vwm/eventing /opt/vwm/harness

USER 1000:1000
WORKDIR /workspace
EXPOSE 8080
ENTRYPOINT ["python", "-m", "harness"]
