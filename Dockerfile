# One image for every process of the service: `assessments api | relay | worker | db upgrade | ...`.
FROM python:3.11-slim

# ASSESSMENTS_BIND: the CLI defaults to 127.0.0.1, which is unreachable from outside a container.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ASSESSMENTS_BIND=0.0.0.0:8000

WORKDIR /app

# A writable home: gunicorn (>= 25.1) puts its control socket in $HOME/.gunicorn/ by default.
RUN groupadd --system app \
    && useradd --system --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# The whole project (see .dockerignore), including data/ so `assessments issues import
# data/oss-issues.json` works from the working directory.
COPY . .

RUN pip install --no-cache-dir . \
    && rm -rf build ./*.egg-info

USER app

EXPOSE 8000

CMD ["assessments", "api"]
