# syntax=docker/dockerfile:1
# The newsletter service in one image; compose.yaml runs it as `web`, `worker` and the
# migration step. Build: docker build -t newsletter .   (docs/deploy.md, "With Docker")

# --- build: the virtualenv, from the hash-pinned lockfile only ---------------------------
# Python 3.11, the version requirements.lock is compiled for (Makefile, `lock`).
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# Every package pinned with its hashes; pip refuses anything else (as `make run` does).
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.lock

# --- run ---------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NEWSLETTER_CONFIG=/app/config.toml
RUN groupadd --system --gid 10001 newsletter \
    && useradd --system --uid 10001 --gid newsletter --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin newsletter
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The package runs from /app (PYTHONPATH) rather than being built into the virtualenv, so
# that nothing is installed that requirements.lock does not pin. Relative paths in
# config.toml (lessons/, templates/, var/) are taken from /app, the config file's folder.
COPY newsletter/ /app/newsletter/
COPY templates/ /app/templates/
COPY lessons/ /app/lessons/
COPY config.toml /app/config.toml
RUN python -m compileall -q /app/newsletter \
    && mkdir -p /app/var \
    && chown newsletter:newsletter /app/var
# Runtime state: the SQLite file (when no PostgreSQL URL is set), the generated secret key
# (set NEWSLETTER_SECRET_KEY instead when several containers run), the development outbox.
VOLUME ["/app/var"]
USER newsletter:newsletter
EXPOSE 8000
# On SIGTERM (docker stop) sends under way get [sending] shutdown_grace_s (8 s as shipped)
# to finish; give `docker stop` longer than that (compose.yaml: stop_grace_period).
STOPSIGNAL SIGTERM
# The web app's page that reads no database (the app has no health endpoint of its own):
# the process is up and answering. Containers that run no web app (worker) turn this off.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/check-your-email', timeout=4)"]
ENTRYPOINT ["python", "-m", "newsletter"]
# The scheduler and the web app in one process; compose.yaml runs them apart.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
