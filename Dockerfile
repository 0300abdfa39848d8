# The UnityPlan appservice image. docker-compose.yml builds it once and runs one container per territory
# (appservice-dk, ...), each with its own /config/config.yaml and /config/registration.yaml mounted.
#
#   docker compose build appservice-dk
#   docker compose run --rm appservice-dk db migrate      # any `unityplan` subcommand works the same way
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Runs as uid/gid 991, the same as Synapse in matrixdotorg/synapse: the registration file both containers
# mount can then be `chown 991:991` and mode 0600 (see docs/deployment.md).
RUN groupadd --system --gid 991 unityplan \
 && useradd --system --uid 991 --gid 991 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin unityplan

# Only what `pip install .` needs (the packages pyproject.toml lists); tests, deploy/ and .env stay out.
COPY pyproject.toml README.md /src/
COPY appservice /src/appservice
COPY bridges /src/bridges
COPY commands /src/commands
COPY core /src/core
COPY registration /src/registration
COPY db /src/db
COPY workflows /src/workflows
RUN pip install /src && rm -rf /src

USER unityplan
WORKDIR /config
EXPOSE 29333
ENTRYPOINT ["unityplan", "-c", "/config/config.yaml"]
CMD ["run"]
