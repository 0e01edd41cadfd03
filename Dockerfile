# syntax=docker/dockerfile:1
# One image for ElectroCloud's Python services: backend, billing, and the demo's
# simulator and edge agent (`electrocloud <command>`). Multi-stage: the build stage
# installs the project into a virtualenv, the runtime stage copies only that. Runs
# as the unprivileged user "electrocloud" (uid 10001). The base image is multi-arch:
#   docker buildx build --platform linux/amd64,linux/arm64 -t electrocloud .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/electrocloud
WORKDIR /src
# README.md is not copied: the wheel builds without it (no long description needed).
COPY pyproject.toml LICENSE ./
COPY electrocloud ./electrocloud
COPY edge ./edge
COPY backend ./backend
COPY billing ./billing
COPY simulator ./simulator
# A regular (not editable) install: the runtime stage needs no source tree.
RUN /opt/electrocloud/bin/pip install . \
 && /opt/electrocloud/bin/electrocloud --version

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 electrocloud \
 && useradd --system --uid 10001 --gid electrocloud --home-dir /var/lib/electrocloud \
      --shell /usr/sbin/nologin electrocloud \
 && mkdir -p /var/lib/electrocloud /etc/electrocloud \
 && chown electrocloud:electrocloud /var/lib/electrocloud
COPY --from=build /opt/electrocloud /opt/electrocloud
COPY deploy/compose/with-secret.sh deploy/compose/billing-schedule.sh /usr/local/bin/
ENV PATH=/opt/electrocloud/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER electrocloud
# Named volumes mounted here start with this directory's owner: the service user.
WORKDIR /var/lib/electrocloud
ENTRYPOINT ["electrocloud"]
CMD ["--help"]
