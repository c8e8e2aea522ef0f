# sessionstore image: the package and its `sessionstore` console script.
# Build: docker build -t sessionstore . (or `docker compose build`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY . .
RUN pip install . && rm -rf build

# Run unprivileged; /data is the working directory, where the default SQLite file lands.
RUN useradd --create-home --uid 10001 sessionstore \
    && mkdir /data \
    && chown sessionstore: /data
USER sessionstore
WORKDIR /data

ENTRYPOINT ["sessionstore"]
CMD ["--help"]
