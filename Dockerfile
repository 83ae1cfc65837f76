# Switchboard in a container: the wheel built from this checkout, installed by the same
# deploy/install.sh (with constraints.txt) that the wheel test runs, as a non-root user.
#
#   docker build -t switchboard:0.1.0 .
#   docker run --rm -v switchboard-data:/data switchboard:0.1.0 generate \
#       -c /data/config.yaml -r /data/registration.yaml
#   docker run -d -v switchboard-data:/data -p 127.0.0.1:29331:29331 switchboard:0.1.0
#
# deploy/docker-compose.yml runs it with Synapse and PostgreSQL. This file is not built by the
# test suite (its machine cannot pull base images); tests/deploy/test_containers.py checks it
# statically: it installs with deploy/install.sh and constraints.txt, runs as a non-root user,
# and its ports and health check are the config's.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# 1. The wheel, built by the setuptools version the tests pinned.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
RUN python -m pip install --no-cache-dir -c constraints.txt setuptools \
    && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# 2. The wheel installed into /opt/switchboard by the shared install script, nothing else.
FROM ${PYTHON_IMAGE}
COPY deploy/install.sh /tmp/install/deploy/install.sh
COPY constraints.txt /tmp/install/constraints.txt
COPY --from=build /dist/ /tmp/dist/
RUN sh /tmp/install/deploy/install.sh /opt/switchboard /tmp/dist/switchboard-*.whl \
    && rm -rf /tmp/install /tmp/dist /root/.cache

# Its own user; /data holds config.yaml and (with SQLite) the database, /registration the
# registration for a homeserver in another container (deploy/docker-compose.yml shares it).
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin switchboard \
    && install -d -o switchboard -g switchboard -m 0750 /data \
    && install -d -o switchboard -g switchboard -m 0755 /registration
VOLUME /data
WORKDIR /data
USER switchboard

# Inside a container both listeners face the container's network (publish only the portal's
# port; the homeserver reaches the appservice port over the container network). The database
# defaults to a file in /data; deploy/docker-compose.yml points it at PostgreSQL.
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SWITCHBOARD_PORTAL__HOSTNAME=0.0.0.0 \
    SWITCHBOARD_APPSERVICE__HOSTNAME=0.0.0.0 \
    SWITCHBOARD_DATABASE__URL=sqlite:////data/switchboard.db
# the portal (portal.port) and the appservice endpoint (appservice.port)
EXPOSE 29331 29330

# /health answers while the process lives (no curl in the slim image: Python asks)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:29331/health', timeout=4)"]

# `docker run IMAGE` runs the desk; `docker run IMAGE generate -c …` and `… --version` work too
ENTRYPOINT ["switchboard"]
CMD ["run", "-c", "/data/config.yaml"]
