# The Dispo image: the API (default command) and the scheduler (`dispo aggregate`). It installs the whole locked
# set with its hashes, every extra included (the analysts' files and pictures among them), then Dispo itself.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY core core
COPY mappings mappings
COPY indexer indexer
COPY rpps_import rpps_import
COPY aggregation aggregation
COPY search search
COPY booking booking
COPY analytics analytics
COPY editor_sandbox editor_sandbox
COPY api api
COPY bench bench
COPY dispo dispo
COPY data data
RUN pip install --no-cache-dir --no-deps . && useradd --system dispo
USER dispo
EXPOSE 8000
CMD ["dispo", "serve", "--host", "0.0.0.0", "--port", "8000"]
