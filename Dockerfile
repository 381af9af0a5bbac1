# The start-all demo image: the booking app of examples/koyeb (Django + django-q2) with
# start-all built from this repository. Same layout as templates/Dockerfile, which installs
# start-all from requirements.txt instead.
#   podman build --format docker -t start-all-demo .
#   podman run --rm --memory 512m -p 127.0.0.1:8000:8000 -e PORT=8000 start-all-demo

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /build
COPY examples/koyeb/requirements.txt ./
COPY pyproject.toml README.md* ./start-all/
COPY supervisor/ ./start-all/supervisor/
COPY bin/ ./start-all/bin/
RUN /opt/venv/bin/pip install "./start-all[django]" -r requirements.txt

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8000 \
    DATA_DIR=/app/data
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY examples/koyeb/ ./
RUN mkdir -p /app/data && chown app:app /app/data
USER 10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["start-all", "status", "--quiet"]
ENTRYPOINT ["start-all"]
